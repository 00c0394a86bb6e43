"""The CUDA training path (``make gpu-check`` runs these on a GPU machine; skipped without CUDA)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_utils import synthetic_batch, tiny_config
from train_fixtures import ROOT, make_tiny_project, project_env, read_summary

from model.config import LossConfig, OptimConfig
from model.discriminator import build_discriminators
from model.gan import GanStep, prepare_module
from model.generator import build_generator

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _step(device: str, optim: OptimConfig, steps: int = 2) -> list[dict[str, float]]:
    torch.manual_seed(0)
    cfg = tiny_config("full")
    dev = torch.device(device)
    g = prepare_module(build_generator(cfg), dev, optim)
    d, d_face = build_discriminators(cfg)
    gan = GanStep(g, prepare_module(d, dev, optim), prepare_module(d_face, dev, optim), cfg,
                  LossConfig(backbone="none"), optim)
    batch = synthetic_batch(2)
    return [gan.step(dict(batch)) for _ in range(steps)]


def _close(a: dict[str, float], b: dict[str, float], rel: float) -> None:
    for key in ("g_total", "d_total", "l1", "g_adv", "grad_norm_g"):
        assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-4), key


def test_compact_batch_expanded_on_cuda_equals_the_cpu_expansion():
    # What training feeds a GPU: NHWC uint8 images and keypoints copied through DeviceBatches
    # (pinned, non_blocking, side stream) and expanded there, against the CPU device's expansion.
    import numpy as np

    from datasets.shards import expand

    rng = np.random.default_rng(0)
    b, h, w, k = 4, 64, 44, 18
    kp = rng.uniform(-10, [w + 10, h + 10], (b, k, 2)).astype(np.float32)
    kp[rng.random((b, k)) < 0.2] = -1
    compact = {"source_rgb": rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
               "target_rgb": rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
               "source_keypoints": kp, "target_keypoints": kp[::-1].copy(),
               "target_face_box": np.zeros((b, 4), np.float32), "target_face_valid": np.zeros(b, bool),
               "source_name": ["s"] * b, "target_name": ["t"] * b}
    expander = expand.Expander("keypoints", k, (h, w), 3.0)
    want = next(iter(expand.DeviceBatches([dict(compact)], torch.device("cpu"), expander)))
    got = next(iter(expand.DeviceBatches([dict(compact)], torch.device("cuda"), expander)))
    for key in ("source_image", "target_image"):
        assert got[key].is_cuda and got[key].is_contiguous() and torch.equal(got[key].cpu(), want[key]), key
    for key in ("source_pose", "target_pose"):
        assert (got[key].cpu() - want[key]).abs().max() <= 1e-6, key


def test_a_cuda_step_matches_the_cpu_step():
    fp32 = OptimConfig(amp="none", channels_last=False, compile="never")
    for a, b in zip(_step("cpu", fp32), _step("cuda", fp32)):
        _close(a, b, rel=1e-3)


def test_bf16_channels_last_step_stays_near_float32():
    fp32 = OptimConfig(amp="none", channels_last=False, compile="never")
    fast = OptimConfig(amp="bf16", channels_last=True, compile="never")
    for a, b in zip(_step("cuda", fp32), _step("cuda", fast)):
        _close(a, b, rel=5e-2)


def test_compiled_equals_eager_on_cuda():
    eager = OptimConfig(amp="none", channels_last=False, compile="never")
    compiled = OptimConfig(amp="none", channels_last=False, compile="always")
    for a, b in zip(_step("cuda", eager), _step("cuda", compiled)):
        _close(a, b, rel=1e-3)


def test_one_gpu_worker_ray_run_checkpoints_and_resumes(tmp_path: Path):
    params = make_tiny_project(tmp_path)
    base = [sys.executable, "-m", "pipelines.train", "--params", str(params), "--workers", "1", "--run-name", "gpu",
            "--set", "train.device=cuda"]
    first = subprocess.run([*base, "--set", "train.total_images=8"], cwd=ROOT, env=project_env(tmp_path),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    s = read_summary(tmp_path, "gpu")
    assert s["status"] == "completed" and s["device"] == "cuda" and s["images"] == 8
    second = subprocess.run([*base, "--set", "train.total_images=16"], cwd=ROOT, env=project_env(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stderr
    s = read_summary(tmp_path, "gpu")
    assert s["status"] == "completed" and s["images"] == 16
