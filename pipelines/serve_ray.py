"""The registered champions on a running Ray: deploy, inspect, shut down the Serve application.

    python -m pipelines.serve_ray deploy [--model models:/attnflow-pose@champion] [--port 5002]
                                         [--address 127.0.0.1:6379] [--params params.yaml] [--set serve.KEY=V]
    python -m pipelines.serve_ray status [--address ...]
    python -m pipelines.serve_ray shutdown [--address ...]

``make serve-ray`` starts a local Ray head (infra/ray-head.sh) and deploys; ``make
serve-ray-stop`` shuts the application down and stops the head when serve-ray started it.  The
application (:mod:`pipelines.serving.ray_app`) answers ``mlflow models serve``'s HTTP contract on
127.0.0.1:PORT and follows the alias.  On a Kubernetes cluster, infra/rayservice.yaml deploys the
same application through KubeRay.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args

log = logging.getLogger("serve-ray")

DEFAULT_MODEL = "models:/attnflow-pose@champion"
DEFAULT_ADDRESS = "127.0.0.1:6379"  # infra/ray-head.sh's head


def connect(address: str) -> None:
    import socket

    import ray

    host, _, port = address.rpartition(":")
    try:  # ray.init retries an unreachable GCS for minutes: ask the port first
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"error: no Ray at {address} ({exc}); start one with infra/ray-head.sh start "
            "(make serve-ray does)"
        ) from None
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as exc:
        raise SystemExit(
            f"error: no Ray at {address} ({exc}); start one with infra/ray-head.sh start "
            "(make serve-ray does)"
        ) from None


def deploy(args: argparse.Namespace) -> int:
    from pipelines.serving.ray_app import ServeError, application
    from pipelines.serving.ray_local import wait_ready
    from pipelines.serving.server import HOST, absolute_tracking_uri
    from pipelines.tracking.journal import project_root, tracking_uri

    cfg = config_from_args(args).serve
    try:
        app = application(
            args.model,
            cfg,
            absolute_tracking_uri(tracking_uri()),
            runtime_env={"env_vars": {"PYTHONPATH": str(project_root())}},
        )
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ray import serve

    connect(args.address)
    serve.start(http_options={"host": HOST, "port": args.port})
    log.info(
        "deploying %s (%d-%d replicas, batches up to %d) ...",
        args.model,
        cfg.min_replicas,
        cfg.max_replicas,
        cfg.max_batch_size,
    )
    t0 = time.monotonic()
    serve.run(app, name=args.name, route_prefix="/")
    wait_ready(args.port, time.monotonic() + args.start_timeout)
    print(
        f"{args.model} on Ray Serve: http://{HOST}:{args.port}/invocations (GET /ping), ready in "
        f"{time.monotonic() - t0:.0f} s; every answer names its version in the X-Model-Version header"
    )
    return 0


def status(args: argparse.Namespace) -> int:
    from ray import serve

    connect(args.address)
    apps = serve.status().applications
    if not apps:
        print("no Serve application running")
        return 1
    for name, app in apps.items():
        print(f"{name}: {app.status}")
        for dep, d in app.deployments.items():
            print(f"  {dep}: {d.status}, replicas {dict(d.replica_states)}")
    return 0


def shutdown(args: argparse.Namespace) -> int:
    from ray import serve

    connect(args.address)
    serve.shutdown()
    print("Serve application shut down")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.serve_ray", description=__doc__.split("\n")[0])
    add_log_level_arg(p)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy", help="deploy the application on the Ray at --address")
    d.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"models:/NAME@ALIAS (followed), models:/NAME/VERSION "
        f"or a model folder (default: {DEFAULT_MODEL})",
    )
    d.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SERVE_PORT", "5002")),
        help="HTTP port on 127.0.0.1 (default: SERVE_PORT or 5002)",
    )
    d.add_argument("--name", default="attnflow", help="Serve application name (default: attnflow)")
    d.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds to wait for /ping (default: 300)"
    )
    add_config_args(d)
    for q in (
        d,
        sub.add_parser("status", help="the application's replicas"),
        sub.add_parser("shutdown", help="shut the Serve application down (the Ray keeps running)"),
    ):
        q.add_argument(
            "--address",
            default=os.environ.get("RAY_ADDRESS", DEFAULT_ADDRESS),
            help=f"the Ray to use (default: RAY_ADDRESS or {DEFAULT_ADDRESS})",
        )
    args = p.parse_args(argv)
    setup_logging(args.log_level, "serve-ray")
    # Before anything imports ray, which reads these then.  As infra/submit.sh: Ray 2.60 heads ask
    # for the token in ~/.ray/auth_token (or RAY_AUTH_TOKEN); a loopback head is reached on
    # loopback, not on the machine address Ray would otherwise swap in for it.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if args.address.rpartition(":")[0] in ("127.0.0.1", "localhost"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return {"deploy": deploy, "status": status, "shutdown": shutdown}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
