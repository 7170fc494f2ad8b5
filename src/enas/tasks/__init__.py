"""Tasks: data, loss and reward. A task knows nothing of spaces or controllers."""
