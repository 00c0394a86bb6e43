"""Fault injection, resume side (fault 16): a damaged newest checkpoint, a flaky store, a store down.

Through the training command (``--workers 0``) of the tiny project: a checkpoint proven damaged is
skipped for the one before and the MLflow run says which and why; storage errors are retried and,
when they persist, stop the run with an error naming the checkpoint while nothing in the run
folder (checkpoints included) changes. The store-level cases (each kind of damage, every
checkpoint damaged, a state this code cannot unpickle) are in tests/test_train_checkpoint.py; a
real object store that stops answering mid-resume is the ``faults`` test at the end.
"""
from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path

import pytest
from train_fixtures import FlakyReads, file_hashes, make_tiny_project, read_summary

from pipelines import train
from pipelines.training import checkpoint as ckpt
from pipelines.training.checkpoint import CheckpointReadError, CheckpointStore


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resumeproj")
    return root, make_tiny_project(root)


@pytest.fixture(autouse=True)
def _env(project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNFLOW_ROOT", str(project[0]))
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ATTNFLOW_FAULTS"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's retry pauses, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(ckpt, "_sleep", asked.append)
    return asked


def _train(project: tuple[Path, Path], run: str, images: int) -> int:
    return train.main(["--params", str(project[1]), "--workers", "0", "--run-name", run,
                       "--set", f"train.total_images={images}"])


def _trained(project: tuple[Path, Path], run: str) -> CheckpointStore:
    """A finished 16-image run: checkpoints at steps 4 and 8."""
    assert _train(project, run, 16) == 0
    store = CheckpointStore(project[0] / "runs" / run / "checkpoints")
    assert [c.step for c in store.committed()] == [4, 8]
    return store


def test_damaged_newest_checkpoint_resumes_from_the_one_before_and_tags_the_run(
        project: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    root, _ = project
    store = _trained(project, "damaged")
    newest = store.committed()[-1]
    state = Path(newest.path) / ckpt.STATE_FILE
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: only the marker's sha256 can tell
    state.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        assert _train(project, "damaged", 24) == 0
    s = read_summary(root, "damaged")
    assert s["resumed_from_step"] == 4 and s["steps"] == 12
    assert [k["where"] for k in s["skipped_checkpoints"]] == [newest.path]
    assert any("skipping damaged checkpoint" in r.getMessage() and str(state) in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    tags = MlflowClient(f"sqlite:///{root / 'mlruns.db'}").get_run(s["mlflow_run_id"]).data.tags
    reason = tags["skipped_checkpoint.step-000000008"]
    assert str(state) in reason and "does not match its commit marker: sha256" in reason
    # The resumed run wrote step 8 again, this time whole.
    assert store.load(store.committed()[-1])["step"] == 12
    assert store.load(ckpt.CheckpointInfo(8, newest.path))["step"] == 8


def test_transient_read_errors_while_resuming_are_retried(project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                          pauses: list[float]) -> None:
    root, _ = project
    _trained(project, "flaky")
    flaky = FlakyReads(failures=2).install(monkeypatch)
    assert _train(project, "flaky", 24) == 0
    s = read_summary(root, "flaky")
    assert s["resumed_from_step"] == 8 and s["skipped_checkpoints"] == [] and s["steps"] == 12
    assert flaky.calls >= 3 and pauses[:2] == [ckpt.READ_RETRY_DELAY_S, 2 * ckpt.READ_RETRY_DELAY_S]


@pytest.mark.parametrize("failing", ["state read", "listing"])
def test_storage_down_while_resuming_stops_the_run_and_changes_nothing(
        project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        pauses: list[float], failing: str) -> None:
    root, _ = project
    run = f"down-{failing.split()[0]}"
    store = _trained(project, run)
    run_dir = root / "runs" / run
    before = file_hashes(run_dir)
    assert {"summary.json", "config.json", "tracking/journal.jsonl"} <= set(before)
    if failing == "state read":  # the loop's read of the newest state.pt
        FlakyReads(failures=math.inf).install(monkeypatch)
        where = f"{store.committed()[-1].path}/{ckpt.STATE_FILE}: read failed"
    else:  # prepare_run's listing, which used to take an unreachable store for an empty one
        def unreachable(self: CheckpointStore) -> list[str]:
            raise TimeoutError(110, "Connection timed out")

        monkeypatch.setattr(CheckpointStore, "_list_dirs", unreachable)
        where = f"{store.root}: listing failed"

    with caplog.at_level(logging.ERROR):
        assert _train(project, run, 24) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(where in m and ("ConnectionResetError" in m or "TimeoutError" in m) for m in errors), errors
    assert len(pauses) == ckpt.READ_ATTEMPTS - 1
    assert file_hashes(run_dir) == before


@pytest.mark.faults
def test_object_store_that_stops_answering_mid_resume_stops_the_run_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto frozen (SIGSTOP) after the listing: reads time out, the resume stops naming the
    s3:// checkpoint; once it answers again every object is still there, unchanged, and the
    same store resumes from the newest."""
    import boto3
    import pyarrow.fs
    import torch
    from s3_fixtures import S3Server, use_env

    with S3Server(log=tmp_path / "moto.log") as server:
        use_env(monkeypatch, server)
        url = server.make_bucket("resume") + "/runs/r/checkpoints"
        store = CheckpointStore(url, keep=3)
        for step in (4, 8):
            store.save(step, {"step": step, "w": torch.full((4,), float(step))})
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"])

        def objects() -> dict[str, str]:
            listed = client.list_objects_v2(Bucket="resume", Prefix="runs/")["Contents"]
            return {o["Key"]: o["ETag"] for o in listed}

        before = objects()
        committed = store.committed()
        # The same bucket through a client that gives up on a silent server in seconds, not
        # minutes (the SDK's default timeouts and retries): the outcome is the same, sooner.
        store._fs = pyarrow.fs.S3FileSystem(
            endpoint_override=server.url, region="us-east-1", access_key=server.env["AWS_ACCESS_KEY_ID"],
            secret_key=server.env["AWS_SECRET_ACCESS_KEY"], connect_timeout=1, request_timeout=1,
            retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1))
        monkeypatch.setattr(ckpt, "READ_ATTEMPTS", 2)
        monkeypatch.setattr(ckpt, "READ_RETRY_DELAY_S", 0.1)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(CheckpointReadError) as err:
                store.load(committed[-1])
        finally:
            os.killpg(server.proc.pid, signal.SIGCONT)
        assert str(err.value).startswith(f"{url}/step-000000008/COMMITTED: read failed 2 times, last with OSError")
        assert "NETWORK_CONNECTION" in str(err.value)
        assert objects() == before
        assert store.resume_point().info.step == 8
