"""One tiny 2-worker Ray Train run, so CI guards the distributed path (about a minute)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import (
    ROOT,
    make_tiny_project,
    metric_steps,
    processes_of,
    project_env,
    read_summary,
    stop_processes,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rayproj")
    return root, make_tiny_project(root)


def test_two_worker_ray_run(project: tuple[Path, Path]) -> None:
    root, params = project
    cmd = [sys.executable, "-m", "pipelines.train", "--params", str(params), "--workers", "2", "--run-name", "r2"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=project_env(root), capture_output=True, text=True, timeout=300)
    finally:
        left = processes_of(root)
        stop_processes(left)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert left == [], f"Ray processes left behind: {left}"
    s = read_summary(root, "r2")
    assert s["status"] == "completed" and s["workers"] == 2
    # 16 images at 2 per worker and 2 workers: 4 steps; a checkpoint every 8 images.
    assert s["images"] == 16 and s["steps"] == 4
    assert len(s["g_param_digests"]) == 2 and len(set(s["g_param_digests"])) == 1
    assert metric_steps(root, s["mlflow_run_id"]) == [1, 2, 3, 4]
    # Ray recorded the checkpoints the loop committed (reported without a copy).
    snapshot = json.loads((root / "runs/r2/checkpoint_manager_snapshot.json").read_text())
    assert "step-000000004" in json.dumps(snapshot)
    assert sorted(p.name for p in (root / "runs/r2/checkpoints").iterdir()) == ["step-000000002", "step-000000004"]
