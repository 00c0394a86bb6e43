"""Logged and registered generators back from MLflow: a model URI or folder -> PackedGenerator."""

from __future__ import annotations

from pathlib import Path

from model.export import PackedGenerator
from pipelines.tracking.journal import tracking_uri


class ModelLoadError(ValueError):
    """A model URI or folder that does not give an AttnFlow generator; the message says why."""


def load_packed(model: str) -> PackedGenerator:
    """A registered/logged MLflow model URI or a local MLflow model folder -> PackedGenerator."""
    if not (model.startswith(("models:/", "runs:/", "file:")) or (Path(model) / "MLmodel").is_file()):
        raise ModelLoadError(
            f"--model {model!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… "
            "or a folder holding an MLmodel file"
        )
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri())  # the project's store (MLFLOW_TRACKING_URI overrides)
    try:
        net = mlflow.pytorch.load_model(model, map_location="cpu")
    except MlflowException as exc:
        raise ModelLoadError(f"--model {model}: {exc.message.splitlines()[0]}") from None
    if not isinstance(net, PackedGenerator):
        raise ModelLoadError(f"--model {model}: not an AttnFlow generator (got {type(net).__name__})")
    return net.eval()
