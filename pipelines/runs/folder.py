"""Where a training run's files are: the one place their names are spelled.

::

    runs/<run>/                           RunFolder.path (under the project root)
        summary.json                      .summary: what training reports (records.TrainSummary)
        config.json                       .config: the resolved params the run trains with
        tracking/                         .tracking: the MLflow journal (pipelines/tracking/journal.py)
        grids/step-NNNNNNN.png            .grid(step): preview grids
        faults/                           .faults: fault-injection state (tests only)
        checkpoints/                      .receipt: with the checkpoints in a bucket, where they are
            location.txt                  .receipt_location
            COMMITTED.json                .receipt_commit: the newest one's commit marker
        registered-<dataset>.json         .registered(dataset): records.RegistrationReceipt
    <train.storage_path>/<run>/           .store_root: Ray Train's run folder
        checkpoints/                      .checkpoints: the checkpoint store (a folder or a URL)
        checkpoint_manager_snapshot.json  Ray Train's record of the run's checkpoints

With the default ``train.storage_path: runs`` both trees are one: ``runs/<run>/checkpoints`` holds
the checkpoints themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import storage
from pipelines.runs.records import TrainSummary

RUNS = "runs"  # the run folders, under the project root
CHECKPOINTS = "checkpoints"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints
_REGISTERED = "registered-{dataset}.json"


@dataclass(frozen=True)
class RunFolder:
    """One training run: ``path`` is ``runs/<run>``; ``storage`` the resolved ``train.storage_path``
    its checkpoints live under (a folder or a URL)."""

    path: Path
    storage: str

    @classmethod
    def of(cls, run_name: str, storage_path: str = RUNS, root: Path = Path()) -> RunFolder:
        """Run ``run_name`` of the project at ``root``; a local ``storage_path`` (``file://``
        included) is relative to ``root``, a URL is kept as it is."""
        where = storage_path if storage.is_url(storage_path) else str(root / storage.local_path(storage_path))
        return cls(root / RUNS / run_name, where)

    @classmethod
    def at(cls, path: Path) -> RunFolder:
        """The run at ``path`` with its checkpoints beside its files (``train.storage_path: runs``):
        for whoever only reads or writes ``runs/<run>/`` itself."""
        return cls(path, str(path.parent))

    @classmethod
    def under(cls, root: Path) -> list[RunFolder]:
        """Every run folder of the project at ``root``, by name."""
        runs = root / RUNS
        return [cls.at(p) for p in sorted(runs.iterdir()) if p.is_dir()] if runs.is_dir() else []

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def tracking(self) -> Path:
        return self.path / "tracking"

    @property
    def grids(self) -> Path:
        return self.path / "grids"

    def grid(self, step: int) -> Path:
        return self.grids / f"step-{step:07d}.png"

    @property
    def faults(self) -> Path:
        return self.path / "faults"

    @property
    def store_root(self) -> str:
        """``<train.storage_path>/<run>``: Ray Train's run folder, the checkpoints' parent."""
        return storage.join(self.storage, self.name)

    @property
    def checkpoints(self) -> str:
        """The checkpoint store: a folder, or a URL (``s3://…/<run>/checkpoints``)."""
        return storage.join(self.store_root, CHECKPOINTS)

    @property
    def checkpoints_in_bucket(self) -> bool:
        return storage.is_url(self.checkpoints)

    @property
    def receipt(self) -> Path:
        """``runs/<run>/checkpoints``, the train stage's DVC output: the checkpoints themselves, or
        with them in a bucket the two receipt files."""
        return self.path / CHECKPOINTS

    @property
    def receipt_location(self) -> Path:
        return self.receipt / "location.txt"

    @property
    def receipt_commit(self) -> Path:
        return self.receipt / "COMMITTED.json"

    def registered(self, dataset: str) -> Path:
        return self.path / _REGISTERED.format(dataset=dataset)

    def registrations(self) -> list[Path]:
        """The registration receipts of this run, by name."""
        return sorted(self.path.glob(_REGISTERED.format(dataset="*")))

    def attempt_state(self) -> tuple[Path, ...]:
        """What an attempt leaves in ``runs/<run>/`` besides checkpoints: a fresh start removes it."""
        return (self.tracking, self.grids, self.faults, self.summary, self.config, self.path / RAY_SNAPSHOT)

    def mlflow_run_id(self) -> str | None:
        """The MLflow run training logged to, from its summary (None: no summary, or no MLflow)."""
        return TrainSummary.load(self.summary).mlflow_run_id if self.summary.is_file() else None
