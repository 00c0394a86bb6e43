"""Check a Ray job's runtime env before submitting it, so a bad one fails here, at once, with a
message that names the problem, instead of after an upload or as a job stuck in PENDING.

    python -m pipelines.job_preflight RUNTIME_ENV_JSON        (infra/submit.sh runs it)

Checks: the keys are runtime-env fields Ray knows (a typo such as ``pipp`` is otherwise ignored),
``pip`` / ``env_vars`` / ``excludes`` have the types Ray accepts, ``working_dir`` is a folder, and
the working dir zipped the way Ray zips it (its ``excludes`` and ``.gitignore`` applied) stays
under Ray's upload limit (the gRPC message size; pipelines/jobs/package.py), naming the largest
files when it does not.  Exit status: 0 ok, 2 a problem (printed to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.jobs.package import largest_files, package_size, upload_limit
from pipelines.tracking.redact import redact

log = logging.getLogger("job_preflight")


class PreflightError(ValueError):
    """The runtime env cannot be submitted as it is."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_runtime_env(env: dict, limit: int | None = None) -> dict:
    """Raise :class:`PreflightError` naming what is wrong; returns ``env`` unchanged when it is fine."""
    from ray.runtime_env import RuntimeEnv

    if not isinstance(env, dict):
        raise PreflightError(f"runtime env must be a mapping, got {type(env).__name__}")
    unknown = sorted(set(env) - set(RuntimeEnv.known_fields))
    if unknown:
        raise PreflightError(
            f"runtime env: unknown field(s) {', '.join(unknown)} (Ray knows: "
            f"{', '.join(sorted(f for f in RuntimeEnv.known_fields if not f.startswith('_')))})"
        )
    env_vars = env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise PreflightError("runtime env: env_vars must map names to strings")
    excludes = env.get("excludes") or []
    if not isinstance(excludes, list) or not all(isinstance(e, str) for e in excludes):
        raise PreflightError("runtime env: excludes must be a list of path patterns")
    try:
        RuntimeEnv(**env)  # Ray's own type checks (pip, conda, uv, ...)
    except (TypeError, ValueError) as exc:
        raise PreflightError(f"runtime env: {exc}") from None
    working_dir = env.get("working_dir")
    # Ray's rule, not datasets.storage's: any URI (a file:// zip included) Ray fetches itself.
    if working_dir is None or "://" in str(working_dir):
        return env  # nothing to upload from here
    root = Path(working_dir)
    if not root.is_dir():
        raise PreflightError(f"runtime env: working_dir {working_dir!r} is not a folder")
    limit = upload_limit() if limit is None else limit
    size = package_size(root, excludes)
    if size >= limit:
        big = ", ".join(f"{name} ({_mib(n)})" for n, name in largest_files(root, excludes))
        raise PreflightError(
            f"working_dir {str(root.resolve())!r} zips to {_mib(size)}, over Ray's upload limit of {_mib(limit)}; "
            f"largest files: {big}. Add them to 'excludes' in the runtime env (infra/runtime_env.yaml) or to "
            ".gitignore, or put data on shared storage (docs/cluster.md)"
        )
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.job_preflight", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "runtime_env",
        metavar="RUNTIME_ENV_JSON",
        help="the job's runtime env as a JSON object (infra/submit.sh builds it from infra/runtime_env.yaml)",
    )
    add_log_level_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "job_preflight")
    try:
        check_runtime_env(json.loads(args.runtime_env))
    except json.JSONDecodeError as exc:
        log.error("runtime env is not valid JSON: %s", exc)
        return 2
    except PreflightError as exc:
        log.error("%s", redact(str(exc)))
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
