"""The `enas` command: argument parsing and the verbs; nothing else."""
