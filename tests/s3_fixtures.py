"""A local S3-compatible server (moto in server mode, as s3fs's own tests use) for the storage tests.

``S3Server`` runs ``moto_server`` as its own process on 127.0.0.1 (so a test can kill it to take the
endpoint down, and subprocesses and Ray workers reach it as they would a real one) and gives the
environment every client of the project reads: ``AWS_ENDPOINT_URL`` (s3fs/botocore and pyarrow's S3
file system both take it), test credentials, a region.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """``moto_server`` on 127.0.0.1; ``env`` points clients at it. ``extra_env`` reaches the server
    (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT`` to make it check credentials)."""

    def __init__(self, port: int | None = None, extra_env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            # pyarrow's S3 client would otherwise look for EC2 instance metadata on start.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> "S3Server":
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.extra_env},
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.url} within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def make_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_env(monkeypatch, server: S3Server) -> None:
    """Point this process's storage clients at ``server`` (fresh s3fs instances: they cache)."""
    import fsspec

    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
