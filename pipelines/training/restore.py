"""Trained generators back: from a checkpoint (the newest committed one of a run, or a given step)
or from MLflow, whichever a :class:`~pipelines.runs.source.GeneratorSource` names.

Used by evaluation, registration and the apps; nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import storage
from model.config import ModelConfig
from model.export import PackedGenerator
from model.generator import AttnFlowGenerator, build_generator
from pipelines.config.params import build_dataclass
from pipelines.runs.source import GeneratorSource, SourceError
from pipelines.tracking.models import load_packed
from pipelines.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointInfo,
    CheckpointReadError,
    CheckpointStore,
    DamagedCheckpointError,
)


class CheckpointError(SourceError):
    """No usable checkpoint where one was asked for; the message says where and why."""


def latest_checkpoint(root: Path | str) -> tuple[CheckpointStore, tuple[CheckpointInfo, dict]]:
    """The newest committed checkpoint that is not damaged (older ones stand in for damaged ones,
    with a warning); a storage error raises rather than fall back to an older one."""
    store = CheckpointStore(root)
    try:
        found = store.load_latest()
    except (CheckpointReadError, DamagedCheckpointError) as exc:
        raise CheckpointError(str(exc)) from exc
    if found is None:
        raise CheckpointError(
            f"no committed checkpoint under {root}; train first (python -m pipelines.train)"
        )
    return store, found


def _load_at(
    location: str, parent: str | Path, name: str, path: str
) -> tuple[CheckpointStore, tuple[CheckpointInfo, dict]]:
    """``location`` names a ``step-…`` folder (``parent``/``name``, at ``path``) or a run's
    ``checkpoints`` folder (its newest committed checkpoint)."""
    match = CHECKPOINT_NAME.match(name)
    if not match:
        return latest_checkpoint(location)
    store = CheckpointStore(parent)
    info = CheckpointInfo(step=int(match.group(1)), path=path)
    try:
        return store, (info, store.load(info))
    except CheckpointReadError as exc:  # unreachable or unloadable, which is not "not committed"
        raise CheckpointError(str(exc)) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{location}: not a committed checkpoint ({exc})") from None


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """A checkpoint folder (``…/step-NNNNNNNNN``) or a run's ``checkpoints`` folder (newest
    committed one) -> (state, info)."""
    text = str(path)
    if storage.is_url(text):
        # Object storage (s3://…). Recorded as a URL (the store's paths drop the scheme) so that
        # registration, which loads the evaluated checkpoint by this path, reaches the same store.
        parent, _, name = text.rstrip("/").rpartition("/")
        store, (info, state) = _load_at(text, parent, name, f"{CheckpointStore(parent).root}/{name}")
        where = f"{storage.scheme(text)}://{info.path}"
    else:
        p = storage.local_path(text).absolute()
        if not p.exists():
            raise CheckpointError(f"{p}: checkpoint not found")
        store, (info, state) = _load_at(str(p), p.parent, p.name, str(p))
        where = str(info.path)
    return state, {
        "source": "checkpoint",
        "path": where,
        "step": int(state.get("step", info.step)),
        "images": int(state.get("images", -1)),
        "state_sha256": store.marker(info)["sha256"],
    }


def ema_generator(state: dict) -> tuple[AttnFlowGenerator, ModelConfig]:
    """The EMA generator of a training checkpoint and its ModelConfig."""
    mcfg = build_dataclass(ModelConfig, state["config"]["model"], "model")
    g = build_generator(mcfg)
    g.load_state_dict(state["gan"]["ema"])
    return g.eval().requires_grad_(False), mcfg


@dataclass(frozen=True)
class CheckpointGenerator:
    """A training checkpoint's EMA generator, in eval mode without gradients."""

    ema: AttnFlowGenerator
    info: dict[str, Any]  # source ("checkpoint"), path, step, images, state_sha256, variant
    state: dict  # the checkpoint's whole training state (config, step, …)

    def as_packed(self) -> PackedGenerator:
        """The one-tensor form the apps run, at the image size and heatmap sigma of the dataset
        the checkpoint was trained on."""
        config = self.state.get("config") or {}
        name = (config.get("train") or {}).get("dataset")
        spec = (config.get("datasets") or {}).get(name) or {}
        if "image_size" not in spec:
            raise CheckpointError(
                f"{self.info['path']}: the checkpoint's config does not name its dataset's image size"
            )
        sigma = spec.get("pose_sigma") or (config.get("preprocess") or {}).get("heatmap_sigma", 1.0)
        return PackedGenerator(self.ema, self.ema.cfg.pose_channels, tuple(spec["image_size"]), float(sigma))


@dataclass(frozen=True)
class ModelGenerator:
    """A logged or registered MLflow model, as it was logged."""

    packed: PackedGenerator
    info: dict[str, Any]  # source ("model"), uri

    def as_packed(self) -> PackedGenerator:
        return self.packed


def load_checkpoint_generator(location: str) -> CheckpointGenerator:
    """The EMA generator of a checkpoint folder or URL (``step-…``, or a run's ``checkpoints`` for
    its newest committed one); :class:`CheckpointError` saying why when there is none."""
    state, info = load_checkpoint(location)
    g, mcfg = ema_generator(state)
    return CheckpointGenerator(g, {**info, "variant": mcfg.variant}, state)


def load_generator(source: GeneratorSource) -> CheckpointGenerator | ModelGenerator:
    """The generator ``source`` names; a :class:`~pipelines.runs.source.SourceError` saying why
    when it does not load."""
    if source.kind == "model":
        return ModelGenerator(load_packed(source.location), {"source": "model", "uri": source.location})
    return load_checkpoint_generator(source.location)
