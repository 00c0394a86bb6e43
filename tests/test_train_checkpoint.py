"""Checkpoint store: commit markers, interrupted writes ignored, damaged ones skipped (storage errors
retried, then fatal), no NaN weights."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import FlakyReads, file_hashes

from pipelines.training import checkpoint as ckpt
from pipelines.training.checkpoint import (CheckpointReadError, CheckpointStore, DamagedCheckpointError,
                                           NonFiniteCheckpointError)


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


def _garbage_with_a_matching_marker(state_file: Path) -> None:
    """Bytes that are no torch archive, committed as if they were: only torch.load can tell."""
    data = b"not a torch archive " * 50
    state_file.write_bytes(data)
    marker = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "step": 2}
    (state_file.parent / ckpt.MARKER_FILE).write_text(json.dumps(marker))


DAMAGE = {
    "truncated": (lambda f: f.write_bytes(f.read_bytes()[:-10]), "does not match its commit marker: .* bytes"),
    "bytes flipped": (lambda f: f.write_bytes(bytes(b ^ 0xFF if i % 97 == 5 else b
                                                    for i, b in enumerate(f.read_bytes()))),
                      "does not match its commit marker: sha256"),
    "state missing": (lambda f: f.unlink(), "missing although its commit marker exists"),
    "marker not json": (lambda f: (f.parent / ckpt.MARKER_FILE).write_bytes(b'{"size": 12, "sha2'),
                        "not a valid commit marker"),
    "marker without hash": (lambda f: (f.parent / ckpt.MARKER_FILE).write_text('{"size": 12}'),
                            "not a valid commit marker"),
    "not an archive": (_garbage_with_a_matching_marker, "not a readable torch archive"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_skipped_with_its_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                              damage: str) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(1, _state(1.0))
    newest = store.save(2, _state(2.0))
    hurt, reason = DAMAGE[damage]
    hurt(Path(newest.path) / ckpt.STATE_FILE)
    with pytest.raises(DamagedCheckpointError, match=reason):
        store.load(newest)
    with caplog.at_level(logging.WARNING):
        found = store.resume_point()
    assert found.info.step == 1 and torch.equal(found.state["gan"]["w"], torch.full((3, 3), 1.0))
    assert [s.where for s in found.skipped] == [newest.path]
    assert re.search(reason, found.skipped[0].reason) and newest.path in found.skipped[0].reason
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipping damaged checkpoint" in m and newest.path in m for m in warned)
    assert store.load_latest()[0].step == 1


def test_every_checkpoint_damaged_stops_instead_of_starting_over(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=5)
    for step in (1, 2):
        info = store.save(step, _state(float(step)))
        state_file = Path(info.path) / ckpt.STATE_FILE
        state_file.write_bytes(state_file.read_bytes()[:-1])
    before = file_hashes(tmp_path / "ck")
    with pytest.raises(DamagedCheckpointError, match=r"every committed checkpoint under .*ck is damaged"):
        store.resume_point()
    assert file_hashes(tmp_path / "ck") == before


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries without waiting; the pauses asked for are recorded."""
    pauses: list[float] = []
    monkeypatch.setattr(ckpt, "_sleep", pauses.append)
    return pauses


def test_transient_read_errors_are_retried_and_resume_from_the_newest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_backoff: list[float]) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(1, _state(1.0))
    store.save(2, _state(2.0))
    flaky = FlakyReads(failures=2).install(monkeypatch)
    found = store.resume_point()
    assert found.info.step == 2 and found.skipped == () and found.state["step"] == 2
    assert flaky.calls == 3
    assert no_backoff == [ckpt.READ_RETRY_DELAY_S, 2 * ckpt.READ_RETRY_DELAY_S]


@pytest.mark.parametrize("failing", ["read", "listing"])
def test_persistent_storage_error_stops_the_resume_and_touches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_backoff: list[float], failing: str) -> None:
    from pipelines.runs.folder import RunFolder
    from pipelines.training.resume import prepare_run

    run_dir = tmp_path / "run"
    store = CheckpointStore(run_dir / "checkpoints", keep=5)
    store.save(1, _state(1.0))
    newest = store.save(2, _state(2.0))
    (run_dir / "tracking").mkdir()
    (run_dir / "tracking" / "journal.jsonl").write_text('{"kind": "tags"}\n')
    (run_dir / "summary.json").write_text("{}")
    before = file_hashes(run_dir)
    if failing == "read":
        FlakyReads(failures=math.inf).install(monkeypatch)
        where = f"{newest.path}/{ckpt.STATE_FILE}"
    else:
        def unreachable(self: CheckpointStore) -> list[str]:
            raise TimeoutError(110, "Connection timed out")

        monkeypatch.setattr(CheckpointStore, "_list_dirs", unreachable)
        where = store.root
        # An unreachable store is not an empty one: the run's state from earlier attempts stays.
        with pytest.raises(CheckpointReadError):
            prepare_run(RunFolder.at(run_dir), store, {})
        no_backoff.clear()
    with pytest.raises(CheckpointReadError) as err:
        store.resume_point()
    message = str(err.value)
    assert message.startswith(f"{where}: {failing} failed {ckpt.READ_ATTEMPTS} times")
    assert ("ConnectionResetError" if failing == "read" else "TimeoutError") in message
    assert len(no_backoff) == ckpt.READ_ATTEMPTS - 1
    assert file_hashes(run_dir) == before


def test_a_state_that_verifies_but_does_not_unpickle_is_no_reason_to_fall_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Intact bytes this code cannot load (a renamed class, say) would fail the same way in every
    older checkpoint: the resume stops and names it, skipping nothing."""
    store = CheckpointStore(tmp_path / "ck", keep=5)
    store.save(1, _state(1.0))
    newest = store.save(2, {**_state(2.0), "extra": _Gone()})
    monkeypatch.delattr(sys.modules[__name__], "_Gone")
    with pytest.raises(CheckpointReadError, match=f"{newest.path}/state.pt: matches its commit marker but"):
        store.resume_point()


class _Gone:
    """A class that a checkpoint pickles and a later version of the code no longer has."""


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
