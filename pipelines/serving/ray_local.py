"""The Ray Serve application on a Ray started for it in this process (the serve benchmark, the
tests): started, waited for (``/ping``, bounded), shut down with everything it started.

``make serve-ray`` keeps a Ray head running after the command instead (:mod:`pipelines.serve_ray`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Self

from pipelines.config.stages import ServeConfig
from pipelines.serving.ray_app import DEFAULT_APP, application
from pipelines.serving.server import HOST, absolute_tracking_uri, pinged
from pipelines.tracking.journal import tracking_uri

log = logging.getLogger(__name__)


def wait_ready(port: int, deadline: float, what: str = "the application") -> None:
    """Until ``GET /ping`` answers 200 on loopback ``port``; RuntimeError at ``deadline``."""
    while time.monotonic() < deadline:
        if pinged(port):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer /ping on {HOST}:{port} in time")


def deploy(
    model: str, port: int, cfg: ServeConfig, start_timeout_s: float = 300.0, name: str = DEFAULT_APP
) -> None:
    """Run the application on the Ray this process is connected to, HTTP on loopback ``port``."""
    from ray import serve

    serve.start(http_options={"host": HOST, "port": port})
    serve.run(application(model, cfg, absolute_tracking_uri(tracking_uri())), name=name, route_prefix="/")
    wait_ready(port, time.monotonic() + start_timeout_s)


@dataclass
class LocalRayServe:
    """A Ray of ``num_cpus`` in this process serving ``model``; use as a context manager."""

    model: str
    port: int
    cfg: ServeConfig
    num_cpus: int | None = None  # None: the machine's cores
    start_timeout_s: float = 300.0
    announce: bool = False
    startup_s: float = math.nan

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Self:
        import ray

        if self.announce:
            log.info(
                "starting Ray Serve (%d replica(s), batches up to %d) on %s:%d ...",
                self.cfg.initial_replicas,
                self.cfg.max_batch_size,
                HOST,
                self.port,
            )
        t0 = time.monotonic()
        # Workers inherit this environment: the repository on PYTHONPATH, the same store.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            num_cpus=self.num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        try:
            deploy(self.model, self.port, self.cfg, self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def replicas(self) -> list[Any]:
        """Handles of the application's live replica actors (named SERVE_REPLICA::app#deployment#id)."""
        import ray

        named = ray.util.list_named_actors(all_namespaces=True)
        return [
            ray.get_actor(a["name"], namespace=a["namespace"])
            for a in named
            if a["name"].startswith(f"SERVE_REPLICA::{DEFAULT_APP}#")
        ]

    @staticmethod
    def stop() -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
