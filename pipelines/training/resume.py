"""Resume or start clean: what a run folder and its checkpoint store say about the next attempt."""

from __future__ import annotations

import shutil

from pipelines.runs.folder import RunFolder
from pipelines.training.checkpoint import CheckpointStore

# Sections whose change makes an existing checkpoint the wrong starting point.
RESUME_MUST_MATCH = ("model", "loss", "optim")


class ResumeError(ValueError):
    """The run's checkpoints were trained with other params; the message says which and what to do."""


def prepare_run(run: RunFolder, store: CheckpointStore, cfg_dict: dict) -> bool:
    """True to resume. A run with no committed checkpoint starts clean: stale tracking journals,
    grids and Ray's checkpoint snapshot from an earlier attempt are removed so that nothing (Ray's
    silent restore by run name included) mixes two runs.

    A store that cannot be listed or read raises :class:`~pipelines.training.checkpoint.CheckpointReadError`
    (after the store's retries) before anything is removed: an unreachable store is not an empty one."""
    committed = store.committed()
    if not committed:
        for path in run.attempt_state():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return False
    meta = store.read_meta(committed[-1])
    old = meta.get("config") or {}
    changed = [s for s in RESUME_MUST_MATCH if old.get(s) is not None and old.get(s) != cfg_dict.get(s)]
    if changed:
        raise ResumeError(
            f"run {run.name!r} was trained with different {', '.join(changed)} params "
            f"(checkpoint {committed[-1].path}); use a new --run-name to start fresh, or restore those params"
        )
    return True
