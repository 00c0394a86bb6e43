"""Fault injection (issue 8, fault 7), ``faults`` suite: a Ray Train worker process killed with a real
SIGKILL mid-run (not a raised exception: no Python cleanup, no error report from the worker) →
the run resumes from the latest checkpoint and the logged step series has no gap or duplicate.
The raised-exception variant, stop + re-submit (9) and the MLflow outage (11) are in
tests/test_train_slow.py, marked ``faults`` as well."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_train_slow import tiny  # noqa: F401  (tiny is a fixture)
from train_fixtures import metric_steps, read_summary, run_in_project, train_command

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_sigkilled_worker_resumes_from_checkpoint_without_gaps(tiny: tuple[Path, Path]) -> None:  # noqa: F811
    root, params = tiny
    # 32 images at 4 per step: 8 steps, a checkpoint every 2 steps; rank 1's process dies before step 5.
    proc = run_in_project(train_command(params, "killed", 2, "train.total_images=32",
                                        "train.faults.kill_at_step=5", "train.faults.kill_rank=1",
                                        "train.max_failures=2"), root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rank 1 (pid" in out and "sends itself SIGKILL before step 5" in out
    s = read_summary(root, "killed")
    assert s["status"] == "completed" and s["steps"] == 8 and s["images"] == 32
    assert s["resumed_from_step"] == 4 and s["restarts"] == 1
    assert s["g_param_digests"][0] == s["g_param_digests"][1]
    assert metric_steps(root, s["mlflow_run_id"]) == list(range(1, 9))  # every step once across the restart
    assert (root / "runs/killed/faults/killed-step5-rank1").exists()
