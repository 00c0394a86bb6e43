"""MLflow tracking that never stops training: a local journal first, a background shipper second.

Rank 0 appends every record (params, tags, metrics, artifacts) to ``<run>/tracking/journal.jsonl``
and a daemon thread sends the journal to MLflow in batches, remembering how far it got in
``cursor.json``. When the tracking server is unreachable the thread warns once, keeps retrying with
back-off and catches up when the server returns; because the journal is a file, records survive a
worker crash or a stopped run, and the next process for the same run (a resume, or
``python -m pipelines.tracking sync runs/<run>``) sends whatever is left to the same MLflow run.

Default store: ``sqlite:///<root>/mlruns.db`` with artifacts under ``<root>/mlruns`` (both
gitignored); ``MLFLOW_TRACKING_URI`` overrides it. ``<root>`` is ``ATTNFLOW_ROOT`` or the working
directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from datasets.files import atomic_write_text
from pipelines.runs.folder import RunFolder
from pipelines.tracking.redact import redact

log = logging.getLogger(__name__)
EXPERIMENT = "attnflow"
# The journal's own files, in the run's tracking folder (RunFolder.tracking).
JOURNAL_FILE = "journal.jsonl"
CURSOR_FILE = "cursor.json"  # the MLflow store, run id and journal offset sent so far
RUN_META_FILE = "run.json"  # what `sync` needs to reopen the run
_BATCH_METRICS = 1000  # MLflow's log_batch limits
_BATCH_PARAMS = 100
# Errors the server will give again however often we retry: drop the record, keep the rest.
_PERMANENT = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE"}


def project_root() -> Path:
    """Where data/, runs/ and the default MLflow store live (``ATTNFLOW_ROOT`` or the cwd)."""
    return Path(os.environ.get("ATTNFLOW_ROOT") or os.getcwd()).absolute()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlruns.db'}"


def default_artifact_location() -> str | None:
    """Artifact root for new experiments in the default SQLite store (None: the server decides)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (project_root() / "mlruns").as_uri()


def ensure_experiment(client: Any, name: str = EXPERIMENT, artifact_location: str | None = None) -> str:
    """The experiment's id, creating it (artifacts under ``<root>/mlruns`` by default) if needed."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location or default_artifact_location()
        )
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def prepare_local_store(uri: str, experiment: str, artifact_location: str | None) -> None:
    """Create a SQLite store and the experiment up front, in the driver.

    Creating the tables runs a chain of migrations that takes seconds; a worker killed in the
    middle (a fault test, a preempted node) would leave a half-migrated file that no MLflow client
    can open afterwards. Server stores are left alone: an unreachable server must not stall a run.
    """
    if not uri.startswith("sqlite:"):
        return
    try:
        from mlflow.tracking import MlflowClient

        ensure_experiment(MlflowClient(tracking_uri=uri), experiment, artifact_location)
    except Exception as exc:  # noqa: BLE001 - tracking never stops training; the shipper retries later
        log.warning("could not prepare %s: %s: %s", redact(uri), type(exc).__name__, redact(str(exc)))


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    # dvc.lock changes as the pipeline runs (its hash is its own tag), so it does not count as dirty.
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"train.batch_size": "4", …}`` (MLflow params are strings)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(data) if isinstance(data, (list, tuple)) else str(data)}


def _is_permanent(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in _PERMANENT


def _run_is_gone(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


class Tracker:
    """Journal + background shipper for one training run (use on rank 0 only)."""

    def __init__(
        self,
        run_dir: str | Path,
        run_name: str,
        experiment: str = EXPERIMENT,
        uri: str | None = None,
        retry_max_s: float = 30.0,
        artifact_location: str | None = None,
    ) -> None:
        self.dir = RunFolder.at(Path(run_dir)).tracking
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = self.dir / JOURNAL_FILE
        self.cursor_file = self.dir / CURSOR_FILE
        self.run_name = run_name
        self.experiment = experiment
        self.uri = uri or tracking_uri()
        # Resolved by the caller where the project root is known (a Ray worker may run elsewhere).
        self.artifact_location = artifact_location if uri else default_artifact_location()
        self.retry_max_s = retry_max_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warned = False
        self._down_since: float | None = None
        self._client: Any = None
        cursor = self._read_cursor()
        self._offset = cursor.get("offset", 0)
        self.run_id: str | None = cursor.get("run_id")
        if self.uri.startswith("http"):
            # Fail fast when the server is down: the journal retries, not the HTTP client.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self._thread = threading.Thread(target=self._ship_loop, name="mlflow-shipper", daemon=True)
        self._thread.start()

    # -- producer side (the training loop) -----------------------------------------------------

    def _append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.journal, "a") as f:
            f.write(line)
        self._wake.set()

    def log_params(self, params: dict[str, Any]) -> None:
        self._append({"kind": "params", "values": flatten(params)})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._append({"kind": "tags", "values": {k: str(v) for k, v in tags.items() if v is not None}})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._append({"kind": "metrics", "step": int(step), "ts": int(time.time() * 1000), "values": values})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._append({"kind": "artifact", "path": str(Path(path).absolute()), "artifact_path": artifact_path})

    @property
    def degraded(self) -> bool:
        """True while the store is unreachable (from the first failure until a send succeeds)."""
        return self._down_since is not None

    def pending(self) -> int:
        """Journal records not yet confirmed by MLflow."""
        if not self.journal.exists():
            return 0
        with open(self.journal, "rb") as f:
            f.seek(self._offset)
            return sum(1 for _ in f)

    def close(self, timeout: float = 30.0) -> int:
        """Try to send the rest for up to ``timeout`` seconds; returns how many records are left."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        last, last_change = self.pending(), time.monotonic()
        while time.monotonic() < deadline and last and self._thread.is_alive():
            time.sleep(0.2)
            now_pending = self.pending()
            if now_pending != last:
                last, last_change = now_pending, time.monotonic()
            elif self.degraded and time.monotonic() - last_change > 5.0:
                break  # the store is down: the journal keeps the rest, the run should not wait
        if self.degraded:
            self._wake.set()  # one last immediate try before giving up
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 5)
        left = self.pending()
        if left:
            log.warning(
                "%d records not yet in MLflow (%s); they stay in %s and are sent by the next resume or "
                "`python -m pipelines.tracking sync %s`",
                left,
                redact(self.uri),
                self.journal,
                self.dir.parent,
            )
        return left

    # -- shipper thread ------------------------------------------------------------------------

    def _read_cursor(self) -> dict:
        if not self.cursor_file.exists():
            return {}
        cursor = json.loads(self.cursor_file.read_text())
        if cursor.get("uri") != redact(self.uri):  # a different store: send the whole journal to a new run
            return {}
        return cursor

    def _write_cursor(self) -> None:
        # The URI as written is redacted: a password in it must not sit in the run folder.
        atomic_write_text(
            self.cursor_file,
            json.dumps({"uri": redact(self.uri), "run_id": self.run_id, "offset": self._offset}),
        )

    def _ensure_run(self) -> None:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        if self.run_id is None:
            exp_id = ensure_experiment(self._client, self.experiment, self.artifact_location)
            run = self._client.create_run(exp_id, run_name=self.run_name)
            self.run_id = run.info.run_id
            self._write_cursor()

    def _read_batch(self) -> tuple[list[dict], list[int]]:
        """Records after the cursor, each with the journal offset just past it."""
        if not self.journal.exists():
            return [], []
        records, ends = [], []
        with open(self.journal, "rb") as f:
            f.seek(self._offset)
            pos = self._offset
            for raw in f:
                if not raw.endswith(b"\n"):  # a line being written right now
                    break
                pos += len(raw)
                records.append(json.loads(raw))
                ends.append(pos)
                if len(records) >= 2000:
                    break
        return records, ends

    def _send(self, records: list[dict], ends: list[int]) -> None:
        """Send records in order, advancing the cursor after each group MLflow confirmed."""
        from mlflow.entities import Metric, Param, RunTag

        i = 0
        while i < len(records):
            kind = records[i]["kind"]
            j = i
            if kind == "metrics":
                metrics: list[Metric] = []
                while (
                    j < len(records)
                    and records[j]["kind"] == "metrics"
                    and (not metrics or len(metrics) + len(records[j]["values"]) <= _BATCH_METRICS)
                ):
                    r = records[j]
                    metrics.extend(Metric(k, v, r["ts"], r["step"]) for k, v in r["values"].items())
                    j += 1
                self._call(partial(self._client.log_batch, self.run_id, metrics=metrics), records[i])
            else:
                j = i + 1
                r = records[i]
                if kind == "params":
                    items = list(r["values"].items())
                    for k in range(0, len(items), _BATCH_PARAMS):
                        chunk = [Param(key, val[:6000]) for key, val in items[k : k + _BATCH_PARAMS]]
                        self._call(partial(self._client.log_batch, self.run_id, params=chunk), r)
                elif kind == "tags":
                    tags = [RunTag(k, v) for k, v in r["values"].items()]
                    self._call(partial(self._client.log_batch, self.run_id, tags=tags), r)
                elif kind == "artifact":
                    if Path(r["path"]).is_dir():
                        self._call(
                            partial(self._client.log_artifacts, self.run_id, r["path"], r["artifact_path"]), r
                        )
                    elif Path(r["path"]).is_file():
                        self._call(
                            partial(self._client.log_artifact, self.run_id, r["path"], r["artifact_path"]), r
                        )
                    else:
                        log.warning("artifact %s no longer exists; skipped", r["path"])
            self._offset = ends[j - 1]
            self._write_cursor()
            i = j

    def _call(self, fn: Any, record: dict) -> None:
        try:
            fn()
        except Exception as exc:
            if _is_permanent(exc):
                log.warning("MLflow rejected a %s record, skipped: %s", record["kind"], exc)
                return
            raise

    def _ship_loop(self) -> None:
        backoff = 1.0
        while True:
            records, ends = self._read_batch()
            if not records:
                if self._stop.is_set():
                    return
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self._ensure_run()
                self._send(records, ends)
            except Exception as exc:  # noqa: BLE001 - the background shipper never stops training
                if _run_is_gone(exc):  # the store was reset: start a fresh run, resend everything
                    self.run_id, self._offset = None, 0
                    continue
                if not self._warned:
                    reason = redact(str(exc).splitlines()[0][:200] if str(exc) else "")
                    log.warning(
                        "MLflow at %s is unavailable (%s: %s); training continues and records wait in %s",
                        redact(self.uri),
                        type(exc).__name__,
                        reason,
                        self.journal,
                    )
                    self._warned = True
                if self._down_since is None:
                    self._down_since = time.monotonic()
                if self._stop.is_set():
                    return
                self._wake.wait(timeout=backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            if self._down_since is not None:
                log.info(
                    "MLflow is reachable again after %.0f s; catching up", time.monotonic() - self._down_since
                )
                self._down_since = None
            backoff = 1.0


def sync(run_dir: str | Path, timeout: float = 120.0) -> int:
    """Send what a run's journal still holds; returns the number of records left."""
    run_dir = Path(run_dir)
    meta_file = RunFolder.at(run_dir).tracking / RUN_META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    # run.json holds the URI redacted; the credentials come from this shell's MLFLOW_TRACKING_URI
    # when it names the same store.
    uri = meta.get("uri")
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri and (uri is None or redact(env_uri) == uri):
        uri = env_uri
    tracker = Tracker(
        run_dir,
        run_name=meta.get("run_name", run_dir.name),
        experiment=meta.get("experiment", EXPERIMENT),
        uri=uri,
        artifact_location=meta.get("artifact_location"),
    )
    return tracker.close(timeout=timeout)


def write_run_meta(
    run_dir: str | Path, run_name: str, experiment: str, uri: str, artifact_location: str | None
) -> None:
    """What ``sync`` needs to reopen a run's journal without the training config."""
    path = RunFolder.at(Path(run_dir)).tracking / RUN_META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "run_name": run_name,
                "experiment": experiment,
                "uri": redact(uri),
                "artifact_location": artifact_location,
            }
        )
    )


def journal_path(run: RunFolder) -> Path:
    """A run's journal: every metric, param, tag and artifact record, one JSON line each."""
    return run.tracking / JOURNAL_FILE


def journal_run_id(run: RunFolder) -> str | None:
    """The MLflow run the journal ships to (None before its first record reached MLflow)."""
    cursor = run.tracking / CURSOR_FILE
    return json.loads(cursor.read_text()).get("run_id") if cursor.is_file() else None
