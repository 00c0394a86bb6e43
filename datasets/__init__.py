"""Data code for AttnFlow: keypoint conventions, layouts, validation, synthetic data, shards, loader."""
