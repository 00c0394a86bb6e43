"""The field's raw dataset layouts: reading them and validating every input with a reason."""
