"""Checkpoint store: commit markers, interrupted writes ignored, damaged ones skipped, no NaN weights."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from pipelines.training import checkpoint as ckpt
from pipelines.training.checkpoint import CheckpointStore, NonFiniteCheckpointError


def _state(value: float) -> dict:
    return {"gan": {"w": torch.full((3, 3), value), "count": torch.tensor(7)}, "step": int(value)}


def test_save_commits_and_loads_latest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(1, _state(1.0), meta={"images": 8})
    store.save(2, _state(2.0))
    assert [c.step for c in store.committed()] == [1, 2]
    info, state = store.load_latest()
    assert info.step == 2 and torch.equal(state["gan"]["w"], torch.full((3, 3), 2.0))
    assert store.read_meta(store.committed()[0])["images"] == 8


def test_interrupted_write_is_ignored_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(4, _state(4.0))

    # A crash after the folder rename but before the commit marker lands (the last replace).
    real_replace = os.replace

    def crash_on_marker(src, dst):
        if str(dst).endswith(ckpt.MARKER_FILE):
            raise KeyboardInterrupt("killed while committing")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_marker)
    with pytest.raises(KeyboardInterrupt):
        store.save(8, _state(8.0))
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert (tmp_path / "ck" / "step-000000008" / ckpt.STATE_FILE).exists()  # written, never committed

    # A crash halfway through writing state.pt into the temporary folder.
    def crash_mid_write(path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt, "_write_synced", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        store.save(12, _state(12.0))
    monkeypatch.undo()
    assert any(p.name.startswith(".tmp-step-000000012") for p in (tmp_path / "ck").iterdir())

    info, state = CheckpointStore(tmp_path / "ck").load_latest()
    assert info.step == 4 and state["step"] == 4


def test_damaged_committed_checkpoint_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(1, _state(1.0))
    newest = store.save(2, _state(2.0))
    state_file = Path(newest.path) / ckpt.STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[:-10])  # truncated after the commit
    with pytest.raises(ValueError, match="does not match its commit marker"):
        store.verify(newest)
    info, _ = store.load_latest()
    assert any("skipping checkpoint" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert info.step == 1


def test_non_finite_state_is_never_written(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck")
    bad = _state(1.0)
    bad["gan"]["w"][1, 1] = float("nan")
    with pytest.raises(NonFiniteCheckpointError, match="gan.w"):
        store.save(3, bad)
    assert store.committed() == []
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_prune_keeps_newest_and_clears_uncommitted_leftovers(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=2)
    for step in (1, 2):
        store.save(step, _state(float(step)))
    leftover = tmp_path / "ck" / "step-000000003"
    leftover.mkdir()
    (leftover / ckpt.STATE_FILE).write_bytes(b"partial")
    for step in (4, 5):
        store.save(step, _state(float(step)))
    assert [c.step for c in store.committed()] == [4, 5]
    assert not leftover.exists()


def test_ray_snapshot_beside_the_store_is_dropped(tmp_path: Path) -> None:
    from pipelines.training.checkpoint import RAY_SNAPSHOT

    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    assert store.drop_ray_snapshot() is False
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / RAY_SNAPSHOT).write_text('{"checkpoint_results": []}')
    assert store.drop_ray_snapshot() is True
    assert not (tmp_path / "run" / RAY_SNAPSHOT).exists()
