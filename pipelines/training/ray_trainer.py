"""Ray glue for training: connect to (or start) Ray, and run the worker loop under a TorchTrainer.

Kept apart from the loop itself (pipelines/training/loop.py), which also runs without Ray.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets.parallel import connect, resolve_address, shutdown
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import TrainSummary
from pipelines.tracking.redact import redact
from pipelines.training.loop import LoopContext, loop_config_from
from pipelines.training.placement import (
    Placement,
    gpus_needed,
    ray_gpus_available,
    ray_request_gpus,
    wait_for_gpus,
)

log = logging.getLogger(__name__)

# Read by Ray Train in the driver and passed on to its controller and workers.
TRAIN_ENV = {
    # Starting a worker (a Python process importing torch) can exceed Ray's 60 s default on a
    # busy machine; the group would then be torn down and restarted forever.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    # Ray re-routes print() on workers through its logger as well, which doubles every line.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def worker_env(threads: int, root: Path) -> dict[str, str]:
    """Environment for training workers: one intra-op thread each on CPU, paths from the driver."""
    env = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "ATTNFLOW_ROOT": str(root),
    }
    for key in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "ATTNFLOW_FAULTS",
    ):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def warn_if_short(num_workers: int, placement: Placement) -> None:
    """Say so when the cluster cannot place the run now: Ray Train then waits (for an autoscaler)
    rather than failing, which on a fixed-size cluster looks like a hang."""
    import ray

    have = ray.cluster_resources()
    need = {k: v * num_workers for k, v in placement.resources_per_worker.items()}
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if have.get(k, 0) < v}
    if short:
        text = ", ".join(f"{k}: needs {v:g}, has {h:g}" for k, (v, h) in short.items())
        log.warning(
            "the Ray cluster is too small for %d workers right now (%s); training waits until nodes "
            "are added",
            num_workers,
            text,
        )


def fit(
    train_fn: Callable[[dict], Any],
    loop_config: dict,
    *,
    num_workers: int,
    placement: Placement,
    run_name: str,
    storage_path: str,
    max_failures: int,
) -> Any:
    """Run ``train_fn`` on ``num_workers`` Ray Train workers; raises if training failed for good.

    A reused ``run_name`` makes Ray restore that run's checkpoint state (its snapshot lives in
    ``<storage_path>/<run_name>``); the loop itself picks the newest *committed* checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    for key, value in TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=placement.backend, timeout_s=600),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=placement.use_gpu,
            resources_per_worker=dict(placement.resources_per_worker),
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            # The loop prunes its own checkpoints (it also runs without Ray); Ray keeps pointers.
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            # Ray Train's per-report INFO lines would drown the loop's own progress lines.
            # ray.train exports v2's RunConfig (which takes it) at run time; mypy sees the v1 one.
            logging_config=LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]
        ),
    )
    result = trainer.fit()
    if result.error is not None:  # pragma: no cover - fit() raises in current Ray; kept for safety
        raise result.error
    return result


class RaySession:
    """The loop's view of a Ray Train worker: rank, device, and checkpoint reports."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    def device(self) -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    def report(self, metrics: dict, checkpoint: Any, store: Any) -> None:
        """Every rank calls this at the same step (Ray's report is a barrier); rank 0 passes the
        checkpoint it already wrote and committed, so Ray records it without copying it."""
        import ray.train
        from ray.train import Checkpoint, CheckpointUploadMode

        ckpt = None
        if checkpoint is not None:
            ckpt = Checkpoint(path=checkpoint.path, filesystem=store.pyarrow_filesystem())
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)


def worker_fn(loop_config: dict) -> None:
    """Ray Train entry point on every worker (module-level, so workers import it by name).

    The worker's root logger is Ray's, not the command's: log as the command does (``[train] …``
    at its ``--log-level``), in place of Ray's console handler."""
    from pipelines.config.logs import setup_logging
    from pipelines.training.loop import context_from, run_worker

    ctx = context_from(loop_config)
    setup_logging(ctx.log_level, "train", own_console=True)
    run_worker(ctx, RaySession())


def train_on_ray(
    ctx: LoopContext, tcfg: Any, storage: str, root: Path, placement: Placement
) -> TrainSummary | None:
    """Run the loop on ``tcfg.workers`` Ray Train workers (joining or starting Ray); the run's
    summary, or None (logged in one line) when training failed."""
    address = resolve_address(tcfg.ray_address)
    started = connect(
        address,
        max(os.cpu_count() or 1, tcfg.workers),
        worker_env(tcfg.threads_per_worker, root),
        root,
        dashboard=True,
    )
    try:
        if placement.use_gpu:
            wait_for_gpus(
                gpus_needed(placement, tcfg.workers),
                tcfg.gpu_wait_s,
                available=ray_gpus_available,
                request=ray_request_gpus(placement, tcfg.workers),
            )
        warn_if_short(tcfg.workers, placement)
        fit(
            worker_fn,
            loop_config_from(ctx),
            num_workers=tcfg.workers,
            placement=placement,
            run_name=ctx.run_name,
            storage_path=storage,
            max_failures=tcfg.max_failures,
        )
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's exception; show the cause in one line
        log.error(
            "training failed: %s: %s", type(exc).__name__, redact(str(exc).strip().splitlines()[-1][:500])
        )
        return None
    finally:
        shutdown(started)
    path = RunFolder.at(Path(ctx.run_dir)).summary
    return TrainSummary.load(path) if path.is_file() else None
