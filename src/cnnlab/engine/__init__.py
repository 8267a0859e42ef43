"""Training engine: the epoch loop (fit), a run from recipe to run dir (run), steps, checkpoints, runtime, DDP."""
