"""A training run's files and records: where they are, what they hold, and where a generator comes from."""
