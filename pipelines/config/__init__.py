"""params.yaml into frozen dataclasses: loading, overrides, the root schema and stage sections."""
