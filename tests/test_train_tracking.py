"""MLflow tracking journal: an unreachable store never blocks, warns once, and is caught up later."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from pipelines.tracking.journal import Tracker, flatten


def test_flatten_nested_config() -> None:
    assert flatten({"train": {"batch_size": 4, "faults": {"nan_rank": 1}}, "model": {"scales": [8, 4]}}) == {
        "train.batch_size": "4", "train.faults.nan_rank": "1", "model.scales": "[8, 4]"}


def test_outage_buffers_warns_once_and_catches_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A SQLite store under a path that is a plain file cannot be opened: the "server" is down
    # until the file makes way for a folder.
    store_dir = tmp_path / "store"
    store_dir.write_text("not a folder")
    uri = f"sqlite:///{store_dir / 'mlruns.db'}"
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, "outage", uri=uri, retry_max_s=0.5)
    tracker.log_params({"train": {"batch_size": 2}})
    t0 = time.perf_counter()
    for step in range(1, 41):
        tracker.log_metrics({"loss/l1": 1.0 / step}, step)
    assert time.perf_counter() - t0 < 1.0  # logging never waits for the store
    deadline = time.monotonic() + 60
    while not tracker.degraded and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tracker.degraded
    time.sleep(1.5)  # a few retries with back-off: still one warning
    left = tracker.close(timeout=3.0)
    assert left == 41 and tracker.run_id is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(m.startswith("MLflow at ") for m in warned) == 1, warned
    assert any("records not yet in MLflow" in m for m in warned), warned

    # The store comes back: a new tracker for the same run (a resume) sends the backlog first.
    store_dir.unlink()
    store_dir.mkdir()
    tracker = Tracker(run_dir, "outage", uri=uri, retry_max_s=0.5)
    for step in range(41, 51):
        tracker.log_metrics({"loss/l1": 1.0 / step}, step)
    assert tracker.close(timeout=60.0) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    steps = sorted(m.step for m in client.get_metric_history(tracker.run_id, "loss/l1"))
    assert steps == list(range(1, 51))
    assert client.get_run(tracker.run_id).data.params == {"train.batch_size": "2"}
    cursor = json.loads((run_dir / "tracking" / "cursor.json").read_text())
    assert cursor["run_id"] == tracker.run_id and cursor["offset"] == (run_dir / "tracking" / "journal.jsonl").stat().st_size
