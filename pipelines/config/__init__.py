"""Params files into frozen dataclasses: loading, --set, the root schema and stage sections."""
