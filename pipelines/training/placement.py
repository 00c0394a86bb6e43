"""Where a training run's workers go: decided from what the run asks for, never from what a
cluster happens to have when the job starts.

An autoscaling cluster whose GPU nodes are at zero reports no GPUs; deciding from that would
quietly train a GPU job on CPU with gloo. So ``train.device`` (and ``train.gpus_per_worker``)
alone say what each Ray worker requests, and a run that asks for GPUs waits for them (asking the
autoscaler) for a bounded time, then fails naming what it asked for and what it found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class PlacementError(RuntimeError):
    """The run cannot be placed as asked; the message says what to change."""


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" | "cuda": what every worker trains on
    use_gpu: bool
    resources_per_worker: dict[str, float]
    backend: str  # torch.distributed backend: nccl on GPUs, gloo on CPUs
    note: str  # why, in one line (printed and logged)


def decide(
    device: str, *, gpus_per_worker: float, threads_per_worker: int, on_cluster: bool, local_cuda: bool
) -> Placement:
    """The placement for ``train.device``; pure, so every combination is tested without a GPU.

    ``on_cluster``: the run joins a Ray cluster (RAY_ADDRESS / train.ray_address), whose nodes may
    come and go; otherwise it runs on this machine (in-process or a local Ray), whose hardware is
    a fixed fact (``local_cuda``: torch sees a CUDA device here).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise PlacementError(f"train.device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        if on_cluster:
            device = "cpu"
            why = (
                "train.device is auto on a Ray cluster: training on CPU workers; set train.device=cuda to ask "
                "the cluster for GPUs"
            )
        else:
            device = "cuda" if local_cuda else "cpu"
            why = f"train.device is auto: this machine {'has' if local_cuda else 'has no'} CUDA device"
    else:
        why = f"train.device is {device}"
    if device == "cuda":
        if gpus_per_worker <= 0:
            raise PlacementError(
                f"train.device is cuda but train.gpus_per_worker is {gpus_per_worker:g}; "
                "give each worker a GPU (1) or a share of one (e.g. 0.5)"
            )
        if not on_cluster and not local_cuda:
            raise PlacementError(
                "train.device is cuda but this machine has no CUDA device "
                "(torch.cuda.is_available() is False); run with --set train.device=cpu, "
                "or submit to a GPU cluster (RAY_ADDRESS, make submit)"
            )
        return Placement(
            "cuda", True, {"CPU": float(threads_per_worker), "GPU": float(gpus_per_worker)}, "nccl", why
        )
    return Placement("cpu", False, {"CPU": float(threads_per_worker)}, "gloo", why)


def gpus_needed(placement: Placement, workers: int) -> float:
    return placement.resources_per_worker.get("GPU", 0.0) * workers


def wait_for_gpus(
    need: float,
    timeout_s: float,
    *,
    available: Callable[[], float],
    request: Callable[[float], Any] | None = None,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
) -> float:
    """Block until the cluster has ``need`` GPUs (asking an autoscaler for them through
    ``request``), or raise :class:`PlacementError` after ``timeout_s``; returns the GPUs seen."""
    have = available()
    if have >= need:
        return have
    if request is not None:
        request(need)
    log.warning(
        "waiting up to %.0f s for %g GPUs (the cluster has %g now; an autoscaler adds GPU nodes on demand)",
        timeout_s,
        need,
        have,
    )
    deadline = clock() + timeout_s
    while clock() < deadline:
        sleep(min(poll_s, max(deadline - clock(), 0.0)))
        have = available()
        if have >= need:
            return have
    raise PlacementError(
        f"asked for {need:g} GPUs (train.workers x train.gpus_per_worker) and the Ray cluster "
        f"had {have:g} after {timeout_s:.0f} s; add GPU nodes, lower train.workers, or raise "
        f"train.gpu_wait_s"
    )


def ray_gpus_available() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def ray_request_gpus(placement: Placement, workers: int) -> Callable[[float], Any]:
    """Ask Ray's autoscaler (a no-op on a fixed-size cluster) for one bundle per worker."""

    def request(_need: float) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[dict(placement.resources_per_worker)] * workers)

    return request


def device_facts(device: Any, world_size: int) -> dict[str, Any]:
    """What a run trains on, for the log and the MLflow run: device, GPU model and GPU count
    (one device per worker, so the count is the world size on GPUs)."""
    import torch

    if device.type != "cuda":
        return {"device": "cpu", "gpu_model": "none", "gpu_count": 0}
    return {"device": "cuda", "gpu_model": torch.cuda.get_device_name(device), "gpu_count": world_size}
