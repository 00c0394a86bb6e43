"""Trained generators back from checkpoints: the newest committed one of a run, or a given step.

Used by evaluation, registration and the portrait editor; nothing here trains.
"""

from __future__ import annotations

from pathlib import Path

from model.config import ModelConfig
from model.generator import AttnFlowGenerator, build_generator
from pipelines.config.params import build_dataclass
from pipelines.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointInfo,
    CheckpointReadError,
    CheckpointStore,
    DamagedCheckpointError,
)


class CheckpointError(RuntimeError):
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
    if "://" in text and not text.startswith("file://"):
        # Object storage (s3://…). Recorded as a URL (the store's paths drop the scheme) so that
        # registration, which loads the evaluated checkpoint by this path, reaches the same store.
        parent, _, name = text.rstrip("/").rpartition("/")
        store, (info, state) = _load_at(text, parent, name, f"{CheckpointStore(parent).root}/{name}")
        where = f"{text.split('://', 1)[0]}://{info.path}"
    else:
        p = Path(path).absolute()
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
