"""Headless-Chromium snapshots of the MLflow UI's registered-model and model-version pages.

    python -m pipelines.ui snapshot --model attnflow-pose --screenshot registry.png
    python -m pipelines.ui snapshot --model attnflow-pose --version champion --size 1280x2400 \
        --screenshot champion-version.png

``make mlflow-ui`` (infra/mlflow-server.sh) serves the UI for people.  ``snapshot`` starts its own
``mlflow server`` on a free 127.0.0.1 port over the project's SQLite store (see
pipelines/tracking/journal.py), loads a registered model's page (or one version's: ``--version`` takes
a number or an alias) in Debian's headless Chromium, checks that the model name and the aliases are on
it (on a version page: the version's aliases and the title of its model card,
pipelines/registry/cards.py), and optionally saves a screenshot of ``--size`` pixels.

Chromium reaches the server under the name :data:`SNAPSHOT_HOST` (mapped to 127.0.0.1, and allowed
by the server): the UI opens its assistant panel over half the page on a first visit to a
``localhost``/``127.0.0.1`` address, and a fresh browser profile is always a first visit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.serving.server import free_port

log = logging.getLogger("ui")
SNAPSHOT_HOST = "mlflow-snapshot"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def server_command(backend_uri: str, artifact_root: str, port: int) -> list[str]:
    hosts = ",".join(f"{h}:{port}" for h in ("127.0.0.1", "localhost", SNAPSHOT_HOST))
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--default-artifact-root",
        artifact_root,
        "--allowed-hosts",
        hosts,
    ]


def project_store() -> tuple[str, str]:
    from pipelines.tracking.journal import project_root, tracking_uri

    uri = tracking_uri()
    if not uri.startswith("sqlite:"):
        raise SystemExit(f"MLFLOW_TRACKING_URI is {uri}: that server has its own UI; open it in a browser")
    return uri, (project_root() / "mlruns").as_uri()


@contextlib.contextmanager
def running_server(
    backend_uri: str, artifact_root: str, port: int | None = None, timeout: float = 90.0
) -> Iterator[str]:
    """An ``mlflow server`` on 127.0.0.1 for the duration of the block; yields its base URL for
    :func:`render` (under :data:`SNAPSHOT_HOST`)."""
    port = port or free_port()
    log_path = Path(tempfile.gettempdir()) / f"attnflow-ui-mlflow-{port}.log"  # for a failed start
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            server_command(backend_uri, artifact_root, port), stdout=log, stderr=subprocess.STDOUT
        )
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
            yield f"http://{SNAPSHOT_HOST}:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(
    url: str, screenshot: Path | None = None, size: tuple[int, int] = (1400, 900), budget_ms: int = 20000
) -> str:
    """The DOM of ``url`` after its scripts ran (and a PNG of it), from headless Chromium."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("Chromium not found: apt-get install -y chromium")
    common = [
        exe,
        *CHROMIUM_FLAGS,
        f"--window-size={size[0]},{size[1]}",
        f"--virtual-time-budget={budget_ms}",
        f"--host-resolver-rules=MAP {SNAPSHOT_HOST} 127.0.0.1",
    ]
    with contextlib.ExitStack() as stack:
        profile = stack.enter_context(tempfile.TemporaryDirectory())
        common.append(f"--user-data-dir={profile}")
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
        ).stdout
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [*common, f"--screenshot={screenshot.absolute()}", url],
                capture_output=True,
                timeout=180,
                check=True,
            )
    return dom


def model_page(base: str, model: str, version: str | None = None) -> str:
    return f"{base}/#/models/{model}" + (f"/versions/{version}" if version else "")


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` in pixels."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, got {text!r}") from None
    if not (200 <= w <= 8000 and 200 <= h <= 16000):
        raise argparse.ArgumentTypeError(f"{text}: width in [200, 8000], height in [200, 16000]")
    return w, h


def version_expectations(backend_uri: str, model: str, version: str) -> tuple[str, list[str]]:
    """A version given by number or alias -> (its number, what its page must show: its aliases and
    the first heading of its description, the model card)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=backend_uri, registry_uri=backend_uri)
    try:
        mv = (
            client.get_model_version(model, version)
            if version.isdigit()
            else client.get_model_version_by_alias(model, version)
        )
    except MlflowException as exc:
        raise SystemExit(f"{model} version {version!r}: {exc.message}") from None
    title = next(
        (line.lstrip("#").strip() for line in (mv.description or "").splitlines() if line.startswith("#")),
        None,
    )
    return str(mv.version), list(mv.aliases or []) + ([title] if title else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.ui", description=__doc__.split("\n\n")[0])
    add_log_level_arg(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot", help="check a registered model's page, optionally save a screenshot")
    add_log_level_arg(snap, subcommand=True)
    snap.add_argument("--model", default="attnflow-pose")
    snap.add_argument(
        "--version", help="a version's page instead of the model's: its number or an alias (champion)"
    )
    snap.add_argument("--screenshot", type=Path)
    snap.add_argument("--size", type=parse_size, default=(1400, 900), help="window and screenshot size, WxH")
    snap.add_argument(
        "--aliases",
        help="aliases that must appear on the page "
        "(default: champion,candidate; on a version page, that version's)",
    )
    args = ap.parse_args(argv)
    setup_logging(args.log_level, "ui")
    backend, artifacts = project_store()
    version, wanted = None, [args.model]
    if args.version:
        version, shown = version_expectations(backend, args.model, args.version)
        wanted += shown if args.aliases is None else []
    if args.aliases is not None or not args.version:
        wanted += [
            a for a in (args.aliases if args.aliases is not None else "champion,candidate").split(",") if a
        ]
    with running_server(backend, artifacts) as base:
        dom = render(model_page(base, args.model, version), args.screenshot, args.size)
    missing = [w for w in wanted if w not in dom]
    if missing:
        log.error("not on the page: %s", ", ".join(missing))
        return 1
    page = f"{args.model} v{version}" if version else args.model
    print(
        f"page of {page} shows {', '.join(wanted)}"
        + (f"; screenshot {args.screenshot}" if args.screenshot else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
