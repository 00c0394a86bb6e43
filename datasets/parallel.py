"""Data work spread over Ray: join (or start) Ray, and map a function over a fixed plan.

Preprocessing and preparing a release are embarrassingly parallel once the work is cut into
pieces *before* anything runs: each piece (a shard to write, a chunk of images to convert) is
planned by the driver, so which item lands where never depends on how many workers there are or
which finishes first. ``ordered_map`` then runs the pieces as Ray tasks and hands back their
results in plan order; the driver writes anything that lists them (a manifest, a rejects file)
only after every piece is complete. Ray tasks rather than Ray Data: the pieces are few, coarse
and already balanced, each writes its own output file, and a task whose worker dies is re-run
whole by Ray (``max_retries``), which is the retry this kind of work needs.

``workers=0`` runs the same function in this process, with no Ray at all.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A local head binds every Ray server to loopback only when Ray treats the machine as a
# single-node setup; this switch (Ray's own, meant for macOS/Windows) makes Linux do the same.
LOOPBACK_KEY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_ENV = {LOOPBACK_KEY: "0"}
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the driver of a submitted job
TASK_RETRIES = 3  # re-runs of a piece whose worker process died (a killed or lost node)


def resolve_address(param_address: str = "") -> str | None:
    """The cluster to join: the param, else ``RAY_ADDRESS``, else None (start a local one)."""
    return param_address or os.environ.get("RAY_ADDRESS") or None


def _is_loopback(address: str | None) -> bool:
    """No address (a private local Ray) or one on 127.0.0.1 / localhost."""
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def connect(
    address: str | None, num_cpus: int, env: dict[str, str], root: Path, *, dashboard: bool = False
) -> bool:
    """Join ``address`` or start a local Ray bound to 127.0.0.1; True if this process started it.

    ``env`` reaches every worker; a local Ray also gets ``root`` on PYTHONPATH so workers import
    the project. ``dashboard`` is needed by Ray Train (its controller reads actor state there).
    """
    os.environ.update(QUIET_ENV)
    from datasets.storage import client_env

    # Shards and checkpoints on an object store are read by workers that may start on other nodes
    # (a `ray start` node's own environment): the endpoint, region and, on this machine only, the
    # credentials travel with the runtime env. Keys already in ``env`` win.
    env = {**client_env(credentials=_is_loopback(address)), **env}
    if not address:
        # Read by Ray at import time, so set before the first `import ray` in this process; the
        # processes Ray starts read it from the environment.
        if "ray" in sys.modules and os.environ.get(LOOPBACK_KEY) != LOOPBACK_ENV[LOOPBACK_KEY]:
            log.warning(
                "Ray was imported before the local Ray was configured: this driver may advertise "
                "a non-loopback address (set %s=0 before importing ray)",
                LOOPBACK_KEY,
            )
        os.environ.update(LOOPBACK_ENV)
    import ray

    if ray.is_initialized():
        return False
    if address:
        if RAY_JOB_ENV in os.environ:
            # Inside `ray job submit`: the job's runtime env (code, requirements, env vars) already
            # reaches every worker, and Ray refuses to merge a second one that sets the same keys.
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        return False
    existing = os.environ.get("PYTHONPATH", "")
    env = {**env, **LOOPBACK_ENV, "PYTHONPATH": f"{root}{os.pathsep}{existing}" if existing else str(root)}
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        runtime_env={"env_vars": env},
        log_to_driver=True,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    return True


def shutdown(started: bool) -> None:
    """Stop the Ray this process started (a joined cluster is left running)."""
    import ray

    if started and ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="piece", disable=not enabled, file=sys.stderr, leave=False)


def ordered_map(
    fn: Callable[[T], R],
    pieces: Sequence[T],
    *,
    workers: int,
    desc: str = "",
    progress: bool = False,
    address: str = "",
    root: Path | None = None,
    on_result: Callable[[int, R], Any] | None = None,
) -> list[R]:
    """``[fn(p) for p in pieces]``, on ``workers`` concurrent Ray tasks when ``workers`` > 0.

    Results come back in plan order whatever the finishing order. At most ``workers`` pieces are
    in flight, so ``workers`` is the parallelism on a cluster too. A piece whose worker dies is
    re-run by Ray up to ``TASK_RETRIES`` times; an exception raised by ``fn`` is not retried (it
    is a data or code error, the same on every try) and propagates unchanged. ``fn`` must be a
    module-level function and each piece picklable. ``on_result(i, result)`` is called in the
    driver as each piece finishes (for progress counters).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    results: list[Any] = [None] * len(pieces)
    bar = _bar(len(pieces), desc, progress)
    if workers == 0 or not pieces:
        for i, piece in enumerate(pieces):
            results[i] = fn(piece)
            if on_result is not None:
                on_result(i, results[i])
            bar.update(1)
        bar.close()
        return results
    root = root or Path(__file__).resolve().parents[1]
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = connect(resolve_address(address), max(workers, 1), threads, root)
    try:
        import ray

        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)(fn)
        pending: dict[Any, int] = {}
        queue = iter(enumerate(pieces))
        _submit(task, queue, pending, workers)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                results[i] = _get(ray, ref)
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)
            _submit(task, queue, pending, workers)
    finally:
        bar.close()
        shutdown(started)
    return results


def _submit(task: Any, queue: Iterable[tuple[int, Any]], pending: dict, limit: int) -> None:
    while len(pending) < limit:
        nxt = next(queue, None)  # type: ignore[call-overload]
        if nxt is None:
            return
        i, piece = nxt
        pending[task.remote(piece)] = i


def _get(ray: Any, ref: Any) -> Any:
    """The task's result; the task's own exception (not Ray's wrapper) when ``fn`` raised."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception) and not isinstance(exc.cause, ray.exceptions.RayError):
            raise exc.cause from None
        raise
