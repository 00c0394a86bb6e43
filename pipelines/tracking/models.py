"""Logged and registered generators back from MLflow: a model URI or folder -> PackedGenerator."""

from __future__ import annotations

from model.export import PackedGenerator
from pipelines.runs.source import SourceError
from pipelines.tracking.journal import tracking_uri


class ModelLoadError(SourceError):
    """A model URI or folder that does not give an AttnFlow generator; the message says why."""


def load_packed(model: str) -> PackedGenerator:
    """A registered/logged MLflow model URI or a local MLflow model folder (what
    :meth:`pipelines.runs.source.GeneratorSource.model` accepts) -> PackedGenerator."""
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
