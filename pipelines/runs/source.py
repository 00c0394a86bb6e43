"""Where a trained generator comes from: the one rule that reads a ``--model`` / ``--checkpoint``.

A source is a training checkpoint (a ``step-…`` folder, or a run's ``checkpoints`` folder for its
newest committed one; local, ``file://`` or in a bucket: ``s3://…/<run>/checkpoints``) or an MLflow
model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/…``, or a folder holding an
``MLmodel`` file). Loading one is :func:`pipelines.training.restore.load_generator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datasets import storage

MODEL_URI_PREFIXES = ("models:/", "runs:/")
EXPECTED = (
    "expected a checkpoint folder, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… "
    "or a folder holding an MLmodel file"
)


class SourceError(ValueError):
    """Text that names no generator, or a generator that does not load; the message says why."""


def _is_model_folder(text: str) -> bool:
    return not storage.is_url(text) and (storage.local_path(text) / "MLmodel").is_file()


@dataclass(frozen=True)
class GeneratorSource:
    kind: Literal["checkpoint", "model"]
    location: str  # as given: a checkpoint folder or URL, an MLflow model URI or folder

    @classmethod
    def parse(cls, text: str) -> GeneratorSource:
        """An MLflow model URI or model folder is a model; any other existing folder, or a bucket
        URL, a checkpoint; anything else a :class:`SourceError`."""
        if text.startswith(MODEL_URI_PREFIXES) or _is_model_folder(text):
            return cls("model", text)
        if storage.is_url(text) or storage.local_path(text).exists():
            return cls("checkpoint", text)
        raise SourceError(f"--model {text!r}: {EXPECTED}")

    @classmethod
    def model(cls, text: str) -> GeneratorSource:
        """``text`` as an MLflow model, or a :class:`SourceError` when it names none."""
        if text.startswith(MODEL_URI_PREFIXES) or _is_model_folder(text):
            return cls("model", text)
        raise SourceError(
            f"--model {text!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… "
            "or a folder holding an MLmodel file"
        )
