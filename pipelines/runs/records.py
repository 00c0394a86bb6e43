"""What the stages write for each other, as typed records with their JSON form.

* :class:`TrainSummary`: ``runs/<run>/summary.json``, written by the training loop at the end of
  every attempt;
* :class:`EvaluationRecord`: ``metrics/<dataset>.protocol.json`` (:func:`protocol_path`), the
  evaluation with its protocol and provenance; the flat scores DVC compares go beside it
  (:func:`write_scores`);
* :class:`RegistrationReceipt`: ``runs/<run>/registered-<dataset>.json``, what a registration
  decided.

Each writes exactly the JSON it always has (keys, order, indentation: DVC, the tests and older
readers depend on it), atomically; reading refuses a document whose keys are not the record's with
a :class:`RecordError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from datasets.files import atomic_write_text

R = TypeVar("R")


class RecordError(ValueError):
    """A document that is not the record it should be; the message names the file and the keys."""


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from None


def _build(cls: type[R], doc: Any, where: str) -> R:
    """``cls(**doc)``, or a :class:`RecordError` that names the missing and the unknown keys."""
    if not isinstance(doc, Mapping):
        raise RecordError(f"{where}: not a JSON object")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - doc.keys())
    unknown = sorted(doc.keys() - {f.name for f in fields})
    if missing or unknown:
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)}" if unknown else "",
        ]
        raise RecordError(
            f"{where}: not a {cls.__name__} ({'; '.join(p for p in parts if p)}); written by another "
            "version of the code? Run the stage that writes it again"
        )
    return cls(**doc)


# -- training --------------------------------------------------------------------------------------

_PHASE = "fraction_"  # a timed phase's share of step time: fraction_<phase> in the JSON


@dataclass(frozen=True)
class TrainSummary:
    """One training attempt, as ``runs/<run>/summary.json`` holds it (in this order)."""

    status: str  # "completed", or "stopped" with the error
    error: str | None
    run_name: str
    workers: int
    device: str
    batch_size_per_worker: int
    images: int
    steps: int
    steps_this_session: int
    images_this_session: int
    images_per_s: float
    time_to_first_step_s: float | None
    time_per_step_s: float
    images_per_s_steady: float | None  # steps only: the benchmark's figure
    fraction_data: float | None
    fraction_compute: float | None
    fraction_allreduce: float | None
    # With --profile-comm: each synchronised phase's share of step time ("h2d", "forward_backward",
    # …), written as fraction_<phase> keys right after fraction_allreduce.
    phase_fractions: dict[str, float]
    skipped_steps: int
    data_errors: int
    restarts: int
    first_losses: dict[str, float] | None
    final_losses: dict[str, float]
    feature_backbone: str
    g_param_digests: list[str]
    resumed_from_step: int | None
    skipped_checkpoints: list[dict[str, str]]
    mlflow_run_id: str | None
    mlflow_records_pending: int | None = None  # journal records not yet in MLflow; absent without MLflow

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "phase_fractions":
                out.update({f"{_PHASE}{k}": v for k, v in value.items()})
            elif f.name != "mlflow_records_pending" or value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, doc: Any, where: str = "training summary") -> TrainSummary:
        if not isinstance(doc, Mapping):
            raise RecordError(f"{where}: not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        phases = {k: v for k, v in doc.items() if k.startswith(_PHASE) and k not in names}
        rest = {k: v for k, v in doc.items() if k not in phases}
        return _build(
            cls, {**rest, "phase_fractions": {k.removeprefix(_PHASE): v for k, v in phases.items()}}, where
        )

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainSummary:
        return cls.from_dict(_read(path), str(path))


# -- evaluation ------------------------------------------------------------------------------------


def protocol_path(metrics_path: Path) -> Path:
    """Where the evaluation record of ``metrics/<name>.json`` goes: ``metrics/<name>.protocol.json``."""
    return metrics_path.with_name(f"{metrics_path.stem}.protocol.json")


def numbers(scores: Mapping[str, Any]) -> dict[str, float]:
    """Only the finite numbers of a method's scores: what a scores file holds."""
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def write_scores(metrics_path: Path, scores: Mapping[str, Any]) -> None:
    """The scores file DVC compares (``dvc metrics diff``): numbers only, keys sorted."""
    atomic_write_text(metrics_path, json.dumps(scores, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation: the scores of the generator under test, both baselines and the held-out
    targets, under the protocol recorded with its hash (pipelines/evaluation/run.py)."""

    dataset: str
    task: str
    model: dict[str, Any]  # the generator's scores: means, _ci95_low/_high, KID _std
    baselines: dict[str, dict[str, Any]]
    floor: dict[str, dict[str, Any]]  # what the real held-out targets score
    metric_names: dict[str, str]  # fd, kid, lpd: the names the networks' scores go by
    not_computed: dict[str, dict[str, str]]  # method -> metric -> why
    model_vs_baselines: dict[str, dict[str, dict[str, Any]]]  # paired-bootstrap verdicts
    correspondence: dict[str, Any]
    per_pair: dict[str, dict[str, list[float]]]  # method -> metric -> one value per pair
    pair_names: list[list[str]]  # (source, target) of each pair, in pair order
    pair_identity: list[Any] | None  # each pair's identity; None when the shards record none
    protocol: dict[str, Any]
    protocol_sha256: str
    generator: dict[str, Any]  # what was scored: checkpoint path/step/sha256, model URI or folder
    manifest_sha256: str | None
    images_dir: str | None
    seconds: float
    metrics_file: str
    portrait: dict[str, Any] | None = None  # portrait datasets only
    # What `evaluate` adds and `score` (a folder of images) has not: both keys are absent when
    # plots is None.
    plots: list[str] | None = None
    mlflow_run_id: str | None = None

    def flat_scores(self) -> dict[str, dict[str, float]]:
        """What ``metrics/<dataset>.json`` holds: per method, only numbers (scores, intervals, KID
        spread), so ``dvc metrics diff`` prints score changes and nothing else."""
        methods = [("model", self.model), *self.baselines.items(), *self.floor.items()]
        return {m: numbers(scores) for m, scores in methods}

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.portrait is None:
            del out["portrait"]
        if self.plots is None:
            del out["plots"], out["mlflow_run_id"]
        return out

    @classmethod
    def from_dict(cls, doc: Any, where: str = "evaluation record") -> EvaluationRecord:
        return _build(cls, doc, where)

    def save(self, path: Path) -> None:
        """The record to ``path`` (:func:`protocol_path` of the scores file), keys sorted."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> EvaluationRecord:
        return cls.from_dict(_read(path), str(path))


# -- registration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationReceipt:
    """What one registration did: the version, where the aliases went and the rule that decided."""

    model_name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    promoted: bool
    reason: str
    champion_version: str  # after the decision ("" when there is none)
    promotion: dict[str, Any] | None  # the policy, its rule and the numbers that decided
    primary_metric: str
    value: float  # the candidate's primary metric, as the evaluation record has it
    protocol_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "registration receipt") -> RegistrationReceipt:
        return _build(cls, doc, where)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RegistrationReceipt:
        return cls.from_dict(_read(path), str(path))
