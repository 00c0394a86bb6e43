"""Slow: a two-node Ray cluster on this machine, a training job submitted through ``infra/submit.sh``
(the ``make submit`` path) with code only in its runtime env, shards and checkpoints in a bucket on
a local S3 server, and the second node's Ray Train worker killed with SIGKILL mid-run.

``ray.cluster_utils.Cluster`` rather than two ``ray start`` processes: the project's local head
keeps every Ray server on 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), and in that mode
``ray start --address`` refuses to add a node (and without it Ray rewrites 127.0.0.1 into the
machine's routable address, which a loopback-only head does not listen on). ``Cluster`` starts
each node's raylet with an explicit 127.0.0.1 address, as separate processes with their own
workers; the job still goes through the head's jobs API exactly as users submit it. The nodes are
started without any storage settings in their environment, so the second node's worker can only
reach the bucket through the job's runtime env (infra/submit.sh). One CPU per node and one CPU
per training worker place exactly one worker on each node.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from s3_fixtures import S3Server, use_env
from test_pipeline_e2e import make_repo_copy
from train_fixtures import DATASET, free_port, make_tiny_project

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RUN = "twonode"


def _pids(mark: str, name: bytes = b"") -> list[int]:
    """Processes whose environment holds ``mark`` (and whose command line holds ``name``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if mark.encode() in env and name in cmd and ") Z " not in stat:
            found.append(int(entry.name))
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def _committed(client, bucket: str) -> list[str]:
    got = client.list_objects_v2(Bucket=bucket, Prefix=f"runs/{RUN}/checkpoints/").get("Contents", [])
    return sorted(o["Key"] for o in got if o["Key"].endswith("/COMMITTED"))


def test_two_node_job_with_shards_and_checkpoints_in_a_bucket_survives_a_killed_worker(tmp_path, monkeypatch):
    server = S3Server(log=tmp_path / "moto.log").start()
    port, dash = free_port(), free_port()
    mark = f"ATTNFLOW_TEST_CLUSTER={port}"  # every process of this cluster inherits it: found and stopped by it
    work = tmp_path / "repo"
    work.mkdir()
    cluster = job = None
    victim = None
    try:
        bucket = "attnflow-cluster"
        server.make_bucket(bucket)
        shards, ckpts = f"s3://{bucket}/shards/{DATASET}", f"s3://{bucket}/runs"
        # Raw images and the params of the tiny dataset; its shards go to the bucket.
        (tmp_path / "tiny").mkdir()
        params = yaml.safe_load(make_tiny_project(tmp_path / "tiny").read_text())
        from datasets.shards.build import preprocess
        from pipelines.config.params import load_config

        params["datasets"][DATASET]["shards"] = shards
        params["train"].update(storage_path=ckpts, workers=2, max_failures=2, total_images=48,
                               checkpoint_every_images=4, log_every_images=4, grid_every_images=48)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        cfg = load_config(tmp_path / "params.yaml")
        with monkeypatch.context() as m:  # storage settings for this preprocess only, not for the nodes
            use_env(m, server)
            preprocess(DATASET, cfg.datasets[DATASET], cfg.preprocess, shards, show_progress=False)

        def edit(raw: dict) -> None:
            raw.clear()
            raw.update(params)

        make_repo_copy(work, {}, edit)
        shutil.rmtree(work / "data", ignore_errors=True)  # the job's code has no data folder at all

        for key in [k for k in os.environ if k.startswith("AWS_")] + ["RAY_ADDRESS", "MLFLOW_TRACKING_URI"]:
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv(mark.split("=")[0], str(port))
        monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # A job's `python` is the head's: this interpreter, with the project's pins.
        monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args=dict(
            num_cpus=1, node_ip_address="127.0.0.1", gcs_server_port=port, include_dashboard=True,
            dashboard_host="127.0.0.1", dashboard_port=dash, temp_dir=f"/tmp/attnflow-ray-test-{port}",
            object_store_memory=200 * 1024 * 1024, dashboard_agent_listen_port=free_port()))
        # A job's driver finds its cluster by "auto", read from the head's temp dir; Cluster writes
        # the address only to Ray's default one, where other Ray instances on this machine also write.
        from ray._private.utils import write_ray_address

        write_ray_address(cluster.gcs_address, f"/tmp/attnflow-ray-test-{port}")
        # Each node's dashboard agent (which runs submitted jobs on the head) needs its own port.
        second = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=200 * 1024 * 1024,
                                  dashboard_agent_listen_port=free_port())
        second_raylet = second.all_processes["raylet"][0].process.pid

        log = open(tmp_path / "job.log", "w")
        job = subprocess.Popen(
            [str(work / "infra/submit.sh"), "--dataset", DATASET, "--run-name", RUN],
            env={**os.environ, **server.env, "BIN": str(BIN), "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
                 "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlruns.db"},
            cwd=work, stdout=log, stderr=subprocess.STDOUT)
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing-secret-value")
        deadline = time.monotonic() + 900
        while not _committed(client, bucket) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _committed(client, bucket), (tmp_path / "job.log").read_text()[-3000:]
        workers = _pids(mark, b"RayTrainWorker")
        on_second = [p for p in workers if _descends_from(p, second_raylet)]
        assert len(workers) == 2 and len(on_second) == 1, f"train workers {workers}, on the second node {on_second}"
        victim = on_second[0]
        os.kill(victim, signal.SIGKILL)
        rc = job.wait(timeout=900)
        out = (tmp_path / "job.log").read_text()
        assert rc == 0, out[-4000:]
    finally:
        if job is not None and job.poll() is None:
            job.kill()
        if cluster is not None:
            cluster.shutdown()
        server.stop()
        deadline = time.monotonic() + 30  # a stopping raylet's helpers take a few seconds to exit
        while (left := _pids(mark)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # by id, only this cluster's processes
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"Ray processes left behind: {left}"

    summary = json.loads((work / "runs" / RUN / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["workers"] == 2
    assert summary["restarts"] >= 1 and summary["resumed_from_step"] >= 1, summary
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(f"sqlite:///{work}/mlruns.db").get_run(summary["mlflow_run_id"]).data.tags
    assert tags["shards"] == shards and tags["checkpoints"] == f"{ckpts}/{RUN}/checkpoints", tags
    assert tags["final_checkpoint"].startswith(f"{ckpts}/{RUN}/checkpoints/step-"), tags
    print(f"\nkilled pid {victim} (the second node's RayTrainWorker); restarts={summary['restarts']} "
          f"resumed_from_step={summary['resumed_from_step']} steps={summary['steps']}; MLflow tags "
          f"shards={tags['shards']} checkpoints={tags['checkpoints']} final_checkpoint={tags['final_checkpoint']}")
