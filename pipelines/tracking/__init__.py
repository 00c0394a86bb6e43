"""MLflow: the run journal and its shipper, the model registry and credential masking."""
