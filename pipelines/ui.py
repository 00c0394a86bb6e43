"""Headless-Chromium snapshots of the MLflow UI's registered-model pages.

    python -m pipelines.ui snapshot --model attnflow-pose --screenshot docs/images/registry.png

``make mlflow-ui`` (infra/mlflow-server.sh) serves the UI for people.  ``snapshot`` starts its own
``mlflow server`` on a free 127.0.0.1 port over the project's SQLite store (see
pipelines/tracking/journal.py), loads a registered model's page in Debian's headless Chromium, checks that
the model name and its aliases are on it, and optionally saves a screenshot.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from pipelines.config.logs import add_log_level_arg, setup_logging

log = logging.getLogger("ui")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(backend_uri: str, artifact_root: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", backend_uri, "--default-artifact-root", artifact_root]


def project_store() -> tuple[str, str]:
    from pipelines.tracking.journal import project_root, tracking_uri

    uri = tracking_uri()
    if not uri.startswith("sqlite:"):
        raise SystemExit(f"MLFLOW_TRACKING_URI is {uri}: that server has its own UI; open it in a browser")
    return uri, (project_root() / "mlruns").as_uri()


@contextlib.contextmanager
def running_server(backend_uri: str, artifact_root: str, port: int | None = None,
                   timeout: float = 90.0) -> Iterator[str]:
    """An ``mlflow server`` on 127.0.0.1 for the duration of the block; yields its base URL."""
    port = port or free_port()
    log = open(Path(tempfile.gettempdir()) / f"attnflow-ui-mlflow-{port}.log", "w")  # for a failed start
    proc = subprocess.Popen(server_command(backend_uri, artifact_root, port), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {base} (exit {proc.poll()})")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(url: str, screenshot: Path | None = None, size: tuple[int, int] = (1400, 900),
           budget_ms: int = 20000) -> str:
    """The DOM of ``url`` after its scripts ran (and a PNG of it), from headless Chromium."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("Chromium not found: apt-get install -y chromium")
    common = [exe, *CHROMIUM_FLAGS, f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}"]
    with contextlib.ExitStack() as stack:
        profile = stack.enter_context(tempfile.TemporaryDirectory())
        common.append(f"--user-data-dir={profile}")
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([*common, f"--screenshot={screenshot.absolute()}", url], capture_output=True, timeout=180,
                           check=True)
    return dom


def model_page(base: str, model: str, version: str | None = None) -> str:
    return f"{base}/#/models/{model}" + (f"/versions/{version}" if version else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.ui", description=__doc__.split("\n\n")[0])
    add_log_level_arg(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot", help="check a registered model's page, optionally save a screenshot")
    add_log_level_arg(snap, subcommand=True)
    snap.add_argument("--model", default="attnflow-pose")
    snap.add_argument("--version", help="a version page instead of the model page")
    snap.add_argument("--screenshot", type=Path)
    snap.add_argument("--aliases", default="champion,candidate", help="aliases that must appear on the page")
    args = ap.parse_args(argv)
    setup_logging(args.log_level, "ui")
    backend, artifacts = project_store()
    with running_server(backend, artifacts) as base:
        dom = render(model_page(base, args.model, args.version), args.screenshot)
    wanted = [args.model] + [a for a in args.aliases.split(",") if a]
    missing = [w for w in wanted if w not in dom]
    if missing:
        log.error("not on the page: %s", ", ".join(missing))
        return 1
    print(f"page shows {', '.join(wanted)}" + (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
