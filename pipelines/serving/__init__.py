"""The registered generators as column-based HTTP services (MLflow pyfunc): the request contract,
the pyfunc implementation and the model flavour that writes both the PyTorch and the pyfunc form."""
