"""Stage entry points (``python -m pipelines.<stage>``), config loading, Ray and MLflow glue."""
