"""The MLflow model registry: publishing evaluated generators as versions, and the promotion rule."""
