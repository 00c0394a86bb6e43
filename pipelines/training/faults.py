"""Test hooks that make a training run fail on purpose (params ``train.faults`` or ``ATTNFLOW_FAULTS``).

``ATTNFLOW_FAULTS`` takes the same keys as ``train.faults``, comma-separated, for runs whose params
should stay untouched (e.g. a Ray job): ``ATTNFLOW_FAULTS="raise_at_step=6,raise_rank=1"``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from pathlib import Path

import torch

from pipelines.config.stages import FaultInjection

log = logging.getLogger(__name__)


class InjectedWorkerFailure(RuntimeError):
    """The deliberate crash of ``train.faults.raise_at_step``."""


def from_env(base: FaultInjection) -> FaultInjection:
    """``base`` with the fields named in ``ATTNFLOW_FAULTS`` replaced."""
    text = os.environ.get("ATTNFLOW_FAULTS", "").strip()
    if not text:
        return base
    valid = {f.name for f in dataclasses.fields(FaultInjection)}
    changes: dict[str, int] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in valid:
            raise ValueError(f"ATTNFLOW_FAULTS: unknown key {key!r} (valid: {', '.join(sorted(valid))})")
        changes[key] = int(value)
    return dataclasses.replace(base, **changes)


class FaultHooks:
    """Fires the configured faults on one rank; the crash fires once per run (a marker file in
    ``<run>/faults/`` remembers it across the restart it causes)."""

    def __init__(self, faults: FaultInjection, rank: int, marker_dir: Path | None) -> None:
        self.faults = faults
        self.rank = rank
        self.marker_dir = marker_dir

    def _first_time(self, name: str, text: str) -> bool:
        """True the first time ``name`` fires in this run (its marker file is written before it fires)."""
        marker = self.marker_dir / name if self.marker_dir else None
        if marker is not None and marker.exists():
            return False
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(text)
            with open(marker) as fh:  # on disk before the process may die
                os.fsync(fh.fileno())
        return True

    def before_step(self, step: int) -> None:
        """Called with the 1-based number of the step about to run."""
        f = self.faults
        if (
            f.kill_at_step == step
            and f.kill_rank == self.rank
            and self._first_time(f"killed-step{step}-rank{self.rank}", "SIGKILL of the worker process\n")
        ):
            log.warning(
                "fault injection: rank %d (pid %d) sends itself SIGKILL before step %d",
                self.rank,
                os.getpid(),
                step,
            )
            os.kill(os.getpid(), signal.SIGKILL)
        if f.raise_at_step != step or f.raise_rank != self.rank:
            return
        if self._first_time(f"raised-step{step}-rank{self.rank}", "injected worker failure\n"):
            raise InjectedWorkerFailure(
                f"injected failure on rank {self.rank} before step {step} (train.faults)"
            )

    def poison(self, step: int, batch: dict) -> dict:
        """Replace the source images with NaN on the chosen rank for ``nan_steps`` steps from ``nan_at_step``."""
        f = self.faults
        if (
            f.nan_at_step < 0
            or f.nan_rank != self.rank
            or not f.nan_at_step <= step < f.nan_at_step + f.nan_steps
        ):
            return batch
        batch = dict(batch)
        batch["source_image"] = torch.full_like(batch["source_image"], float("nan"))
        return batch
