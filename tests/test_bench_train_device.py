"""``python -m pipelines.bench train --device``: the device benchmark's code path, run on the CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_benchmark_runs_the_training_command_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "pipelines.bench", "train", "--device", "cpu", "--size", "64", "44", "--model",
           "default", "--batches", "2", "4", "--compile", "never", "--steps", "3", "--identities", "4",
           "--loader-workers", "0", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["size"] == [64, 44] and report["train_flops_per_image"] > 1e9
    runs = report["runs"]
    assert [(r["batch"], r["compile"]) for r in runs] == [(2, "never"), (4, "never")]
    for r in runs:
        assert r["steps"] == 3 and r["images_per_s_steady"] > 0
        assert 0.99 < r["fraction_data"] + r["fraction_compute"] + (r["fraction_allreduce"] or 0) < 1.01
        # The phases: copy and expansion are part of the data wait, and the step's two phases
        # (forward/backward with its all-reduce; check, optimisers, EMA) make up the rest of it.
        assert 0 <= r["fraction_h2d"] and 0 < r["fraction_expand"]
        assert r["fraction_h2d"] + r["fraction_expand"] <= r["fraction_data"] + 1e-6
        step_share = r["fraction_compute"] + (r["fraction_allreduce"] or 0)
        assert 0.9 * step_share < r["fraction_forward_backward"] + r["fraction_check_optimizer_ema"] <= step_share
        assert r["fraction_check_optimizer_ema"] > 0
    assert "| never | 4 |" in proc.stdout
