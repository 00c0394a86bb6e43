"""A tiny, self-contained training project for the train tests: params, raw data, shards.

Everything lives under one temporary folder that becomes ``ATTNFLOW_ROOT`` (so runs/, the SQLite
MLflow store and the shards are all inside it), with a 48×32 synthetic dataset and a model of
4–16 channels, so one training step takes tens of milliseconds on one CPU thread.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASET = "tiny"

TINY_MODEL = dict(base_channels=8, max_channels=16, flow_channels=4, attn_dim=8, combine_channels=4,
                  disc_channels=4, disc_blocks=3, face_crop_size=16, face_disc_channels=4, face_disc_blocks=2)


def make_tiny_project(root: Path, train: dict | None = None) -> Path:
    """Write ``root/params.yaml`` and the tiny dataset's raw files and shards; returns the params path."""
    from datasets.shards.build import preprocess
    from datasets.synthetic.fashion import write_dataset
    from pipelines.config.params import load_config

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["datasets"][DATASET] = {
        "layout": "deepfashion", "root": str(root / "data/raw/tiny"), "image_size": [48, 32],
        "source_size": [48, 32], "shards": str(root / "data/shards/tiny"), "synthetic": True,
    }
    raw.setdefault("synthesize", {})[DATASET] = {
        "generator": "figure", "seed": 3, "height": 48, "width": 32, "train_identities": 4,
        "test_identities": 2, "views_per_identity": 3, "background": "plain", "file_prefix": "fasion",
    }
    raw["preprocess"] = {**raw.get("preprocess", {}), "shard_size": 4, "face_size": 16, "heatmap_sigma": 2.0}
    # GAN steps from the first (no warm-up phases), at GFLA's rates, without the default's image
    # path: what the loop and fault tests count is the plain adversarial step.
    raw["model"] = {**(raw.get("model") or {}), "decoder_image": False, "image_skip": False, **TINY_MODEL}
    raw["optim"] = {**(raw.get("optim") or {}), "lr_g": 0.0001, "lr_d": 0.00001, "flow_warmup_steps": 0,
                    "warmup_attention": False, "generator_warmup_steps": 0}
    # No sampling-correctness term: on 48×32 pixel features it can overflow to inf (and the step
    # is then skipped), which would blur what the fault tests count.
    raw["loss"] = {**(raw.get("loss") or {}), "backbone": "none", "correctness_strides": []}
    raw["train"] = {**raw.get("train", {}), "dataset": DATASET, "batch_size": 2, "total_images": 16,
                    "checkpoint_every_images": 8, "log_every_images": 4, "grid_every_images": 8,
                    "augment": False, **(train or {})}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(params)
    with contextlib.redirect_stdout(io.StringIO()):
        write_dataset(cfg.synthesize[DATASET], cfg.datasets[DATASET].root)
        preprocess(DATASET, cfg.datasets[DATASET], cfg.preprocess, Path(cfg.datasets[DATASET].shards),
                   show_progress=False)
    return params


def project_env(root: Path) -> dict[str, str]:
    """Environment for a training command of the tiny project (its own MLflow store)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ATTNFLOW_FAULTS")}
    env.update({"ATTNFLOW_ROOT": str(root), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return env


def read_summary(root: Path, run: str) -> dict:
    return json.loads((root / "runs" / run / "summary.json").read_text())


def metric_steps(root: Path, run_id: str, key: str = "train/images", uri: str | None = None) -> list[int]:
    """Steps at which ``key`` was logged (sorted, duplicates from a resume collapsed)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{root / 'mlruns.db'}")
    return sorted({m.step for m in client.get_metric_history(run_id, key)})


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path: what a test compares before and after."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class FlakyReads:
    """Makes ``CheckpointStore._read_bytes`` raise ConnectionResetError for files named ``name``,
    the first ``failures`` times (``math.inf``: always); ``calls`` counts those reads."""

    def __init__(self, failures: float, name: str = "state.pt") -> None:
        self.failures, self.name, self.calls = failures, name, 0

    def install(self, monkeypatch) -> "FlakyReads":
        from pipelines.training.checkpoint import CheckpointStore

        real = CheckpointStore._read_bytes

        def read(store: CheckpointStore, path: str) -> bytes:
            if path.endswith(self.name):
                self.calls += 1
                if self.calls <= self.failures:
                    raise ConnectionResetError(104, "Connection reset by peer")
            return real(store, path)

        monkeypatch.setattr(CheckpointStore, "_read_bytes", read)
        return self


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_with_env(root: Path) -> list[int]:
    marker = f"ATTNFLOW_ROOT={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in env.split(b"\0") and ") Z " not in stat:  # zombies are already gone
            found.append(int(entry.name))
    return found


def processes_of(root: Path, grace_s: float = 20.0) -> list[str]:
    """Processes started for the tiny project (they inherit its ``ATTNFLOW_ROOT``) that are still
    alive ``grace_s`` seconds after the command returned (Ray's raylet, GCS, workers...), as
    "pid: command" strings."""
    import time

    deadline = time.monotonic() + grace_s
    pids = _pids_with_env(root)
    while pids and time.monotonic() < deadline:  # shutting down takes Ray a few seconds
        time.sleep(0.5)
        pids = _pids_with_env(root)
    out = []
    for pid in pids:
        try:
            cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:150]
        except OSError:
            continue
        out.append(f"{pid}: {cmd}")
    return out


def stop_processes(procs: list[str]) -> None:
    """Terminate (then kill) the processes listed by :func:`processes_of`, by id."""
    import signal
    import time

    pids = [int(p.split(":")[0]) for p in procs]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(2)


def train_command(params: Path, run: str, workers: int, *sets: str) -> list[str]:
    """``python -m pipelines.train`` with the tiny project's params, a run name and ``--set`` overrides."""
    cmd = [sys.executable, "-m", "pipelines.train", "--params", str(params), "--workers", str(workers),
           "--run-name", run]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_in_project(cmd: list[str], root: Path, env: dict | None = None,
                   timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository root against the project in ``root``; fails the test when it
    leaves processes behind (and stops them)."""
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env or project_env(root), capture_output=True, text=True,
                              timeout=timeout)
    finally:
        left = processes_of(root)
        stop_processes(left)
        assert left == [], f"processes left behind by {' '.join(cmd[:4])}: {left}"
