"""Device placement is decided from what the run asks for (pipelines/training/placement.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.training.placement import PlacementError, decide, device_facts, gpus_needed, wait_for_gpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("on_cluster", [False, True])
@pytest.mark.parametrize("local_cuda", [False, True])
def test_cpu_is_cpu_everywhere(on_cluster, local_cuda):
    p = decide("cpu", gpus_per_worker=1, threads_per_worker=2, on_cluster=on_cluster, local_cuda=local_cuda)
    assert (p.device, p.use_gpu, p.backend, p.resources_per_worker) == ("cpu", False, "gloo", {"CPU": 2.0})


@pytest.mark.parametrize("local_cuda", [False, True])
def test_cuda_on_a_cluster_asks_for_gpus_whatever_this_machine_has(local_cuda):
    p = decide("cuda", gpus_per_worker=0.5, threads_per_worker=4, on_cluster=True, local_cuda=local_cuda)
    assert (p.device, p.use_gpu, p.backend) == ("cuda", True, "nccl")
    assert p.resources_per_worker == {"CPU": 4.0, "GPU": 0.5}
    assert gpus_needed(p, workers=4) == 2.0


def test_cuda_locally_needs_a_local_gpu():
    assert decide("cuda", gpus_per_worker=1, threads_per_worker=1, on_cluster=False, local_cuda=True).use_gpu
    with pytest.raises(PlacementError, match="no CUDA device"):
        decide("cuda", gpus_per_worker=1, threads_per_worker=1, on_cluster=False, local_cuda=False)


def test_auto_follows_this_machine_locally_and_never_the_cluster():
    assert decide("auto", gpus_per_worker=1, threads_per_worker=1, on_cluster=False, local_cuda=True).device == "cuda"
    assert decide("auto", gpus_per_worker=1, threads_per_worker=1, on_cluster=False, local_cuda=False).device == "cpu"
    # A cluster's GPU count at start-up is not a request: auto there is CPU, and the note says how to ask.
    p = decide("auto", gpus_per_worker=1, threads_per_worker=1, on_cluster=True, local_cuda=True)
    assert p.device == "cpu" and "train.device=cuda" in p.note


def test_bad_requests_are_named():
    with pytest.raises(PlacementError, match="gpus_per_worker is 0"):
        decide("cuda", gpus_per_worker=0, threads_per_worker=1, on_cluster=True, local_cuda=False)
    with pytest.raises(PlacementError, match="auto, cpu or cuda"):
        decide("tpu", gpus_per_worker=1, threads_per_worker=1, on_cluster=True, local_cuda=False)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_waiting_for_gpus_asks_the_autoscaler_and_returns_when_they_come():
    clock, asked = FakeClock(), []
    seen = iter([0, 0, 0, 4])
    have = wait_for_gpus(4, 60, available=lambda: next(seen), request=asked.append, poll_s=5, clock=clock,
                         sleep=clock.sleep)
    assert have == 4 and asked == [4] and clock.t == 15


def test_waiting_for_gpus_is_bounded():
    clock = FakeClock()
    with pytest.raises(PlacementError, match=r"asked for 2 GPUs .* had 1 after 30 s"):
        wait_for_gpus(2, 30, available=lambda: 1, poll_s=7, clock=clock, sleep=clock.sleep)
    assert clock.t == pytest.approx(30)


def test_gpus_already_there_means_no_wait():
    asked = []
    assert wait_for_gpus(1, 0, available=lambda: 8, request=asked.append) == 8 and asked == []


def test_device_facts_on_cpu():
    import torch

    assert device_facts(torch.device("cpu"), 2) == {"device": "cpu", "gpu_model": "none", "gpu_count": 0}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_train_with_cuda_on_a_cpu_machine_fails_at_once_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipelines.train", "--workers", "0", "--set", "train.device=cuda"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "train.device=cpu" in lines[0], proc.stderr
