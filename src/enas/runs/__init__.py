"""The run directory and the machine side of a run: checkpoints, environment, torchrun, progress."""
