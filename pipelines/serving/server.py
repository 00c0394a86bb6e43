"""A model behind ``mlflow models serve`` on loopback, in its own process group: started, waited for
(``/ping``, bounded), stopped with everything it started.  The serve benchmark and the HTTP tests
use it; ``make serve`` runs the same command in the foreground.
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pipelines.tracking.journal import tracking_uri

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pinged(port: int) -> bool:
    """Whether ``GET /ping`` on loopback ``port`` answers 200 (any failure: not yet)."""
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///file`` made absolute (the server runs in another folder)."""
    m = re.fullmatch(r"sqlite:///([^/].*)", uri)
    return f"sqlite:///{Path(m.group(1)).absolute()}" if m else uri


def absolute_model(model: str) -> str:
    return model if re.match(r"^[a-z][a-z0-9+.-]*:", model) else str(Path(model).absolute())


@dataclass
class Server:
    """``mlflow models serve`` in its own process group on loopback; use as a context manager."""

    model: str
    port: int
    workdir: Path  # the server's cwd and log
    workers: int = 1
    threads: int | None = None
    start_timeout_s: float = 300.0
    announce: bool = False  # log the start
    proc: subprocess.Popen | None = None
    startup_s: float = math.nan

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def command(self) -> list[str]:
        cli = Path(sys.executable).with_name("mlflow")
        head = [str(cli)] if cli.is_file() else [sys.executable, "-m", "mlflow"]
        return [
            *head,
            "models",
            "serve",
            "-m",
            absolute_model(self.model),
            "--env-manager",
            "local",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-w",
            str(self.workers),
        ]

    def environment(self) -> dict[str, str]:
        # The model ships its code: no repository on the server's path, as in a deployment.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(tracking_uri())
        env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), env.get("PATH", "")]
        )  # uvicorn by name
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        if self.announce:
            log.info("starting mlflow models serve on %s:%d ...", HOST, self.port)
        t0 = time.monotonic()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(t0 + self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.tail()}")
            if pinged(self.port):
                return
            time.sleep(1.0)
        raise RuntimeError(
            f"the server did not answer /ping within {self.start_timeout_s:.0f} s:\n{self.tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server's process group (it and the uvicorn workers it starts), then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
