"""The training run: per-worker loop, checkpoints, Ray Train glue and fault hooks."""
