"""Slow suite for training (``make test-slow``): real Ray runs, failures, restarts, outages, jobs.

Each test runs commands as users do (subprocesses from the repository root) against its own
project folder (``ATTNFLOW_ROOT``), and checks that no process it started outlives it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_fixtures import (
    ROOT,
    free_port,
    make_tiny_project,
    metric_steps,
    processes_of,
    project_env,
    read_summary,
    run_in_project,
    stop_processes,
    train_command,
)

pytestmark = pytest.mark.slow


def _finite_checkpoints(root: Path, run: str) -> list[int]:
    from pipelines.training.checkpoint import CheckpointStore, non_finite_tensors

    store = CheckpointStore(root / "runs" / run / "checkpoints")
    steps = []
    for info in store.committed():
        assert non_finite_tensors(store.load(info)["gan"]) == []
        steps.append(info.step)
    return steps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("slowtiny")
    return root, make_tiny_project(root)


def test_default_data_two_ray_workers_keep_g_identical(tmp_path: Path) -> None:
    """The embedded default dataset and model (128×88) on 2 Ray workers."""
    from datasets.shards.build import preprocess
    from datasets.synthetic.fashion import write_dataset
    from pipelines.config.params import load_config

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    spec = raw["datasets"]["synthetic_fashion"]
    spec["root"], spec["shards"] = str(tmp_path / "raw"), str(tmp_path / "shards")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(params)
    write_dataset(cfg.synthesize["synthetic_fashion"], spec["root"])
    preprocess("synthetic_fashion", cfg.datasets["synthetic_fashion"], cfg.preprocess, Path(spec["shards"]),
               show_progress=False)
    cmd = train_command(params, "default2", 2, "train.total_images=96", "train.log_every_images=16",
                        "train.checkpoint_every_images=48", "train.grid_every_images=48")
    proc = run_in_project(cmd, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = read_summary(tmp_path, "default2")
    assert s["status"] == "completed" and s["workers"] == 2 and s["steps"] == 12
    assert len(s["g_param_digests"]) == 2 and s["g_param_digests"][0] == s["g_param_digests"][1]
    assert s["feature_backbone"] == "effnet_lite0"
    assert _finite_checkpoints(tmp_path, "default2") == [6, 12]
    assert metric_steps(tmp_path, s["mlflow_run_id"]) == [2, 4, 6, 8, 10, 12]
    print(f"\ndefault data, 2 workers: {s['images_per_s']:.2f} images/s, {s['time_per_step_s']:.2f} s/step, "
          f"time to first step {s['time_to_first_step_s']:.0f} s, g_total "
          f"{s['first_losses']['g_total']:.2f} -> {s['final_losses']['g_total']:.2f}")


@pytest.mark.faults
def test_worker_failure_resumes_from_checkpoint_without_gaps(tiny: tuple[Path, Path]) -> None:
    root, params = tiny
    # 32 images at 4 per step: 8 steps, a checkpoint every 2 steps; rank 1 dies before step 5.
    cmd = train_command(params, "fail", 2, "train.total_images=32", "train.faults.raise_at_step=5",
                        "train.faults.raise_rank=1", "train.max_failures=2")
    proc = run_in_project(cmd, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "injected failure on rank 1 before step 5" in out
    s = read_summary(root, "fail")
    assert s["status"] == "completed" and s["steps"] == 8 and s["images"] == 32
    assert s["resumed_from_step"] == 4 and s["restarts"] == 1
    assert s["g_param_digests"][0] == s["g_param_digests"][1]
    assert metric_steps(root, s["mlflow_run_id"]) == list(range(1, 9))  # no gap across the restart
    assert (root / "runs/fail/faults/raised-step5-rank1").exists()
    print(f"\nworker failure: resumed from step {s['resumed_from_step']}, reached step {s['steps']}")


@pytest.mark.faults
def test_stopped_run_resumes_on_rerun(tiny: tuple[Path, Path]) -> None:
    root, params = tiny
    cmd = train_command(params, "stop", 2, "train.total_images=240", "train.checkpoint_every_images=16")
    ckpts = root / "runs/stop/checkpoints"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=project_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 300
        # Stop after the third checkpoint: the store (keep 2) has pruned the first by then, which
        # Ray's run snapshot still names; the re-run must not trip over it.
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpts.is_dir() and (ckpts / "step-000000012" / "COMMITTED").exists():
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the driver stops training and its local Ray
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = processes_of(root)
        stop_processes(left)
    assert left == [], f"processes left behind by the stopped run: {left}"
    stopped_at = max(int(p.name.split("-")[1]) for p in ckpts.iterdir() if (p / "COMMITTED").exists())
    assert stopped_at < 60 and not (root / "runs/stop/summary.json").exists()

    rerun = run_in_project(cmd, root)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    s = read_summary(root, "stop")
    assert s["status"] == "completed" and s["steps"] == 60
    assert s["resumed_from_step"] is not None and s["resumed_from_step"] >= stopped_at
    assert metric_steps(root, s["mlflow_run_id"]) == list(range(1, 61))
    print(f"\nstop and re-run: stopped with step {stopped_at} committed, resumed from {s['resumed_from_step']}")


@pytest.mark.faults
def test_nan_on_one_rank_is_skipped_by_all(tiny: tuple[Path, Path]) -> None:
    root, params = tiny
    cmd = train_command(params, "nan2", 2, "train.total_images=32", "train.faults.nan_at_step=3",
                        "train.faults.nan_rank=1")
    proc = run_in_project(cmd, root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = read_summary(root, "nan2")
    # Rank 0 saw a finite batch, yet it skipped step 3 too: the all-reduced flag made it.
    assert s["status"] == "completed" and s["skipped_steps"] == 1 and s["steps"] == 8
    assert s["g_param_digests"][0] == s["g_param_digests"][1]
    assert _finite_checkpoints(root, "nan2") == [6, 8]
    from mlflow.tracking import MlflowClient

    hist = MlflowClient(f"sqlite:///{root / 'mlruns.db'}").get_metric_history(s["mlflow_run_id"],
                                                                              "train/skipped_steps")
    assert {m.step: m.value for m in hist}[3] == 1.0 and {m.step: m.value for m in hist}[2] == 0.0


def _mlflow_server(action: str, port: int, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_BACKEND": f"sqlite:///{store / 'server.db'}",
           "MLFLOW_ARTIFACTS": str(store / "artifacts"), "MLFLOW_STATE_DIR": str(store / "state")}
    return subprocess.run([str(ROOT / "infra/mlflow-server.sh"), action], env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.faults
def test_training_survives_mlflow_server_outage_and_catches_up(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    root, params = tiny
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    started = _mlflow_server("start", port, tmp_path)
    assert started.returncode == 0, started.stderr
    env = {**project_env(root), "MLFLOW_TRACKING_URI": uri}
    cmd = train_command(params, "outage", 0, "train.total_images=400")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cursor = root / "runs/outage/tracking/cursor.json"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if cursor.exists() and json.loads(cursor.read_text()).get("offset", 0) > 0:
                break  # the server has confirmed records: take it down mid-run
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before the server could be stopped"
        stopped = _mlflow_server("stop", port, tmp_path)
        assert stopped.returncode == 0, stopped.stderr
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        _mlflow_server("stop", port, tmp_path)
    assert proc.returncode == 0, output[-3000:]
    assert output.count("warning: MLflow at") == 1, output[-3000:]
    s = read_summary(root, "outage")
    assert s["status"] == "completed" and s["steps"] == 200 and s["mlflow_records_pending"] > 0

    # The server returns: the journal is sent to the same run.
    assert _mlflow_server("start", port, tmp_path).returncode == 0
    try:
        sync = subprocess.run([sys.executable, "-m", "pipelines.tracking", "sync", str(root / "runs/outage")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert metric_steps(root, s["mlflow_run_id"], uri=uri) == list(range(2, 201, 2))
    finally:
        _mlflow_server("stop", port, tmp_path)


def test_ray_job_on_local_head_succeeds(tiny: tuple[Path, Path]) -> None:
    root, params = tiny
    port, dash = free_port(), free_port()
    env = {**project_env(root), "RAY_PORT": str(port), "RAY_DASHBOARD_PORT": str(dash),
           "RAY_TEMP_DIR": str(Path("/tmp") / f"attnflow-ray-test-{port}")}
    head = str(ROOT / "infra/ray-head.sh")
    try:
        start = subprocess.run([head, "start"], env=env, capture_output=True, text=True, timeout=180)
        assert start.returncode == 0, start.stdout + start.stderr
        job = subprocess.run([str(ROOT / "infra/submit.sh"), "--params", str(params), "--workers", "2",
                              "--run-name", "job"], env={**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}"},
                             capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run([head, "stop"], env=env, capture_output=True, text=True, timeout=120)
        left = processes_of(root)
        stop_processes(left)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    assert left == [], f"Ray head processes left behind: {left}"
    s = read_summary(root, "job")
    assert s["status"] == "completed" and s["workers"] == 2 and s["steps"] == 4
