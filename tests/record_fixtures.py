"""Stage records for tests: a complete evaluation record with only the fields a test cares about set."""
from __future__ import annotations

from typing import Any

from pipelines.runs.records import EvaluationRecord


def evaluation_record(model: dict[str, Any], protocol_sha256: str = "p" * 64, **fields: Any) -> EvaluationRecord:
    """An evaluation record scoring ``model``; every other field empty unless given."""
    empty: dict[str, Any] = dict(
        dataset="tiny", task="pose", baselines={}, floor={}, metric_names={}, not_computed={},
        model_vs_baselines={}, correspondence={}, per_pair={}, pair_names=[], pair_identity=None, protocol={},
        generator={}, manifest_sha256=None, images_dir=None, seconds=0.0, metrics_file="metrics/tiny.json",
    )
    return EvaluationRecord(model=model, protocol_sha256=protocol_sha256, **{**empty, **fields})
