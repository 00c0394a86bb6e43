"""End to end with object storage: preprocess -> train -> evaluate with the shards and the
checkpoints (``train.storage_path``) in a bucket on a local S3-compatible server (moto).

The commands run as a user runs them (subprocesses of a repository copy, the standard AWS
environment variables pointing at the server), so this also checks that the endpoint reaches every
client: s3fs for the shards, pyarrow for the checkpoints. Nothing is read from a local shard
folder: the copy's data/shards/ never exists and the preprocess receipt is removed before training.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from s3_fixtures import S3Server, use_env
from test_pipeline_e2e import make_repo_copy

DATASET = "synthetic_fashion"
RUN = "s3run"


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


def bucket_keys(server: S3Server, bucket: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_checkpoints_in_a_bucket_follow_the_environments_endpoint(s3, monkeypatch):
    """pyarrow (checkpoints) reads the same AWS_ENDPOINT_URL as s3fs (shards): no other setting."""
    import torch

    from pipelines.training.checkpoint import CheckpointStore
    from pipelines.training.restore import load_checkpoint

    use_env(monkeypatch, s3)
    url = s3.make_bucket("attnflow-ckpt") + "/runs/r/checkpoints"
    store = CheckpointStore(url, keep=1)
    for step in (1, 2):
        store.save(step, {"step": step, "w": torch.full((3,), float(step))})
    keys = bucket_keys(s3, "attnflow-ckpt", "runs/r/checkpoints/")
    assert {k.rsplit("/", 1)[-1] for k in keys} >= {"state.pt", "COMMITTED"}
    assert not any("step-000000001" in k for k in keys)  # pruned on the server, after step 2 committed
    state, info = load_checkpoint(url)
    assert info["step"] == 2 and torch.equal(state["w"], torch.full((3,), 2.0))
    # Recorded as a URL: registration loads exactly this step folder by it.
    assert info["path"] == f"{url}/step-000000002"
    again, info2 = load_checkpoint(info["path"])
    assert info2 == info and torch.equal(again["w"], state["w"])


def test_workers_get_the_storage_settings_and_keys_only_on_this_machine(monkeypatch):
    from datasets.parallel import _is_loopback
    from datasets.storage import client_env

    for key, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "eu-west-1",
                       "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert client_env(credentials=False) == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                             "AWS_DEFAULT_REGION": "eu-west-1"}
    assert client_env(credentials=True)["AWS_SECRET_ACCESS_KEY"] == "secret"
    assert _is_loopback(None) and _is_loopback("127.0.0.1:6379") and _is_loopback("http://localhost:8265")
    assert not _is_loopback("10.0.0.5:6379") and not _is_loopback("http://head.example:8265")


@pytest.mark.slow  # ~3 min on a loaded 2-core machine: five commands, each importing torch
def test_preprocess_train_evaluate_with_shards_and_checkpoints_in_a_bucket(s3, tmp_path):
    bucket = "attnflow-e2e"
    s3.make_bucket(bucket)
    shards, ckpts = f"s3://{bucket}/shards/{DATASET}", f"s3://{bucket}/runs"
    work = tmp_path / "repo"
    work.mkdir()
    env = make_repo_copy(work, {f"datasets.{DATASET}.shards": shards, "train.storage_path": ckpts}, profile="tiny")
    env = {k: v for k, v in env.items() if k not in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RAY_ADDRESS")}
    env.update(s3.env)

    run(["pipelines.synthesize", "--dataset", DATASET], work, env)
    receipt = tmp_path / "receipt"
    pre = run(["pipelines.preprocess", "--dataset", DATASET, "--workers", "0", "--no-figure", "--quiet",
               "--receipt", str(receipt)], work, env)
    assert f"shards in {shards}" in pre.stdout, pre.stdout
    assert f"shards/{DATASET}/manifest.json" in bucket_keys(s3, bucket, f"shards/{DATASET}/")
    shutil.rmtree(receipt)  # the receipt is DVC's record only: nothing after preprocess may read it
    assert not (work / "data" / "shards").exists()

    train = run(["pipelines.train", "--dataset", DATASET, "--workers", "0", "--run-name", RUN], work, env)
    assert f"checkpoints in {ckpts}/{RUN}/checkpoints" in train.stderr, train.stderr[-2000:]
    summary = json.loads((work / "runs" / RUN / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["images"] >= 8  # the tiny profile's budget
    committed = [k for k in bucket_keys(s3, bucket, f"runs/{RUN}/checkpoints/") if k.endswith("/COMMITTED")]
    assert committed, "no committed checkpoint in the bucket"
    # DVC's receipt only (where the checkpoints are, the newest marker); no weights fell back to disk.
    receipt_dir = work / "runs" / RUN / "checkpoints"
    assert sorted(p.name for p in receipt_dir.iterdir()) == ["COMMITTED.json", "location.txt"]
    assert (receipt_dir / "location.txt").read_text().strip() == f"{ckpts}/{RUN}/checkpoints"

    # The newest checkpoint in the bucket is the one evaluation must load; a local copy of the
    # bucket's path does not exist, so a hit here can only come from the server.
    newest = sorted(committed)[-1].rsplit("/", 1)[0]
    assert json.loads((receipt_dir / "COMMITTED.json").read_text())["checkpoint"] == newest.rsplit("/", 1)[-1]
    run(["pipelines.evaluate", "--dataset", DATASET, "--run-name", RUN, "--no-progress"], work, env)
    protocol = json.loads((work / "metrics" / f"{DATASET}.protocol.json").read_text())
    assert protocol["generator"]["path"] == f"s3://{bucket}/{newest}", protocol["generator"]
    assert protocol["protocol"]["pairs"] > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.data.tags["shards"] == shards
    assert mlrun.data.tags["checkpoints"] == f"{ckpts}/{RUN}/checkpoints"
    assert mlrun.data.tags["final_checkpoint"] == f"s3://{bucket}/{newest}"
    assert f"eval/{DATASET}/model/ssim" in mlrun.data.metrics, sorted(mlrun.data.metrics)[:20]
