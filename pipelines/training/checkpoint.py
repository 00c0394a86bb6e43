"""Atomic training checkpoints: write to a temporary name, rename, then commit with a marker.

Layout under ``<storage>/<run>/checkpoints/``::

    step-000001200/state.pt     torch.save of the whole training state
    step-000001200/meta.json    step, images, time, manifest hash (readable without torch)
    step-000001200/COMMITTED    written last: size and sha256 of state.pt

A checkpoint is *committed* once ``COMMITTED`` exists and matches ``state.pt``. Everything else
(``.tmp-*`` folders from an interrupted write, a folder without the marker, a truncated or altered
``state.pt``) is never loaded. Local folders use ``os.replace`` + ``fsync``; URL storage
(``s3://…``, ``gs://…``) goes through ``pyarrow.fs`` where a move is not atomic, so the marker,
written last as a single object, is what commits.

Resuming tells two failures apart. Proof that a committed checkpoint is bad (``state.pt`` missing,
or not matching its marker in size or sha256, a marker that is not a JSON object with both, an
archive torch cannot parse) skips it for the one before, and the reason is returned for the run's
record. Anything else (a storage error that outlasts :data:`READ_ATTEMPTS` tries, a state that
verifies but does not unpickle with this code) stops the resume with :class:`CheckpointReadError`:
falling back would let the resumed run prune or overwrite the newer checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from datasets import storage
from datasets.files import atomic_write_bytes, fsync_dir
from pipelines.runs.folder import RAY_SNAPSHOT

STATE_FILE = "state.pt"
META_FILE = "meta.json"
MARKER_FILE = "COMMITTED"
CHECKPOINT_NAME = re.compile(r"^step-(\d{9})$")
# Tries of one listing or read before a resume gives up, and the pause before the first retry
# (doubled before each next one: 1 + 2 + 4 + 8 s). Long enough for a throttled or restarting
# object store, short enough that an outage is reported within a minute.
READ_ATTEMPTS = 5
READ_RETRY_DELAY_S = 1.0
_sleep = time.sleep  # the retry pause, by name so that tests can record it instead of waiting

log = logging.getLogger(__name__)
T = TypeVar("T")


class NonFiniteCheckpointError(RuntimeError):
    """Raised instead of writing a checkpoint whose tensors hold NaN or Inf."""


class DamagedCheckpointError(ValueError):
    """Proof that a committed checkpoint is bad; the message names its file and what is wrong."""


class CheckpointReadError(RuntimeError):
    """Checkpoints could not be listed or read, for a reason that is no proof they are bad (storage
    unreachable after retries, a state this code cannot unpickle). Nothing was skipped or removed."""


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str  # folder of the checkpoint (local path or path inside the URL filesystem)


@dataclass(frozen=True)
class SkippedCheckpoint:
    where: str  # the checkpoint folder as a user would open it (a path or an s3://… URL)
    reason: str


@dataclass(frozen=True)
class ResumePoint:
    """The newest checkpoint that loads, and the newer ones skipped as damaged (newest first)."""

    info: CheckpointInfo
    state: dict
    skipped: tuple[SkippedCheckpoint, ...] = ()


# What torch.load raises on bytes that are not a complete archive: a truncated or garbled zip
# (RuntimeError from PytorchStreamReader, a negative seek), a cut or garbled pickle. Other errors
# on verified bytes (a missing module or class) mean code and checkpoint disagree, not damage.
_ARCHIVE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError)


def _is_archive_error(exc: BaseException) -> bool:
    return isinstance(exc, _ARCHIVE_ERRORS) or (
        isinstance(exc, RuntimeError) and "PytorchStreamReader" in str(exc)
    )


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of floating-point tensors in a nested state that hold NaN or Inf."""
    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            bad.extend(non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            bad.extend(non_finite_tensors(value, f"{prefix}[{i}]"))
    return bad


class CheckpointStore:
    """Committed checkpoints of one run, in a local folder or under a pyarrow-supported URL."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        root = str(root)
        self._scheme = storage.scheme(root)  # "" for a local folder, file:// included
        if self._scheme:
            import pyarrow.fs

            self._fs, self.root = pyarrow.fs.FileSystem.from_uri(root)
        else:
            self._fs = None
            self.root = str(storage.local_path(root).absolute())

    def where(self, path: str) -> str:
        """``path`` (``root`` or below) as a user would open it: the URL for object storage."""
        return f"{self._scheme}://{path}" if self._scheme else path

    def pyarrow_filesystem(self) -> Any:
        """The pyarrow filesystem that ``CheckpointInfo.path`` is relative to (for Ray)."""
        if self._fs is not None:
            return self._fs
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    # -- reading -------------------------------------------------------------------------------

    def _retrying(self, what: str, path: str, call: Callable[[], T]) -> T:
        """``call()``, retried with backoff on storage errors; :class:`CheckpointReadError` naming
        ``path`` and the last error once :data:`READ_ATTEMPTS` tries failed. FileNotFoundError is
        an answer, not an outage, and goes to the caller at once."""
        delay = READ_RETRY_DELAY_S
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return call()
            except FileNotFoundError:
                raise
            except OSError as exc:
                cause = f"{type(exc).__name__}: {storage.scrub(str(exc))}"
                if attempt == READ_ATTEMPTS:
                    raise CheckpointReadError(
                        f"{self.where(path)}: {what} failed {READ_ATTEMPTS} times, last with {cause}. "
                        "Stopped rather than resume from an older checkpoint or start over; nothing was "
                        "skipped, deleted or overwritten. Check the storage (mount, endpoint, credentials) "
                        "and run again."
                    ) from exc
                log.warning(
                    "%s: %s failed (%s); retry %d of %d in %.1f s",
                    self.where(path),
                    what,
                    cause,
                    attempt,
                    READ_ATTEMPTS - 1,
                    delay,
                )
                _sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _read(self, path: str) -> bytes:
        return self._retrying("read", path, lambda: self._read_bytes(path))

    def _read_bytes(self, path: str) -> bytes:
        if self._fs is None:
            return Path(path).read_bytes()
        with self._fs.open_input_stream(path) as f:
            return f.read()

    def _list_dirs(self) -> list[str]:
        if self._fs is None:
            root = Path(self.root)
            return [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        import pyarrow.fs

        infos = self._fs.get_file_info(pyarrow.fs.FileSelector(self.root, allow_not_found=True))
        return [Path(i.path).name for i in infos if i.type == pyarrow.fs.FileType.Directory]

    def committed(self) -> list[CheckpointInfo]:
        """Folders that carry a commit marker, oldest first (contents verified on load)."""
        found = []
        for name in self._retrying("listing", self.root, self._list_dirs):
            match = CHECKPOINT_NAME.match(name)
            if match is None:
                continue
            path = f"{self.root}/{name}"
            marker = f"{path}/{MARKER_FILE}"
            if self._retrying("lookup", marker, partial(self._exists, marker)):
                found.append(CheckpointInfo(step=int(match.group(1)), path=path))
        return sorted(found, key=lambda c: c.step)

    def _exists(self, path: str) -> bool:
        if self._fs is None:
            return Path(path).is_file()
        import pyarrow.fs

        return self._fs.get_file_info(path).type == pyarrow.fs.FileType.File

    def verify(self, info: CheckpointInfo) -> bytes:
        """The bytes of ``state.pt`` if they match the commit marker, else
        :class:`DamagedCheckpointError` (a ``ValueError``); :class:`CheckpointReadError` if the
        storage keeps failing."""
        marker = self.marker(info)
        where = self.where(f"{info.path}/{STATE_FILE}")
        try:
            data = self._read(f"{info.path}/{STATE_FILE}")
        except FileNotFoundError:
            raise DamagedCheckpointError(f"{where}: missing although its commit marker exists") from None
        if len(data) != marker["size"]:
            raise DamagedCheckpointError(
                f"{where} does not match its commit marker: {len(data)} bytes, the "
                f"marker says {marker['size']} (truncated or replaced)"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != marker["sha256"]:
            raise DamagedCheckpointError(
                f"{where} does not match its commit marker: sha256 {digest[:16]}…, the "
                f"marker says {marker['sha256'][:16]}… (altered since written)"
            )
        return data

    def load(self, info: CheckpointInfo, map_location: str | torch.device = "cpu") -> dict:
        data = self.verify(info)
        where = self.where(f"{info.path}/{STATE_FILE}")
        try:
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
        except Exception as exc:
            cause = f"{type(exc).__name__}: {str(exc)[:300]}"
            if _is_archive_error(exc):
                raise DamagedCheckpointError(f"{where}: not a readable torch archive ({cause})") from exc
            raise CheckpointReadError(
                f"{where}: matches its commit marker but does not load with this "
                f"code ({cause}); check out the code that wrote it, or use a new run "
                "name"
            ) from exc

    def resume_point(self, map_location: str | torch.device = "cpu") -> ResumePoint | None:
        """The newest committed checkpoint that loads; None when there is none.

        A damaged one is skipped for the one before, with a warning and its reason in
        ``skipped``; a storage failure raises :class:`CheckpointReadError`. When every committed
        checkpoint is damaged this raises :class:`DamagedCheckpointError` instead of starting over:
        a fresh run's low-numbered checkpoints would be the first ones pruned.
        """
        skipped: list[SkippedCheckpoint] = []
        for info in reversed(self.committed()):
            try:
                return ResumePoint(info, self.load(info, map_location), tuple(skipped))
            except DamagedCheckpointError as exc:
                log.warning("skipping damaged checkpoint: %s", exc)
                skipped.append(SkippedCheckpoint(self.where(info.path), str(exc)))
        if skipped:
            raise DamagedCheckpointError(
                f"every committed checkpoint under {self.where(self.root)} is damaged ("
                + "; ".join(s.reason for s in skipped)
                + "); nothing was removed. Move that folder away, or use a new run name, to start over"
            )
        return None

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[CheckpointInfo, dict] | None:
        """(info, state) of :meth:`resume_point`."""
        found = self.resume_point(map_location)
        return None if found is None else (found.info, found.state)

    def marker(self, info: CheckpointInfo) -> dict:
        """The commit marker of a checkpoint (holds the state file's size and sha256);
        :class:`DamagedCheckpointError` if it is not one."""
        where = self.where(f"{info.path}/{MARKER_FILE}")
        try:
            raw = self._read(f"{info.path}/{MARKER_FILE}")
        except FileNotFoundError:  # listed a moment ago: removed since, not a store outage
            raise DamagedCheckpointError(f"{where}: missing (removed while being read)") from None
        try:
            marker = json.loads(raw)
            if not (isinstance(marker["size"], int) and isinstance(marker["sha256"], str)):
                raise TypeError("size or sha256 of the wrong type")
        except (ValueError, KeyError, TypeError) as exc:  # JSON and UTF-8 decoding errors are ValueErrors
            raise DamagedCheckpointError(
                f"{where}: not a valid commit marker ({type(exc).__name__}: {exc})"
            ) from None
        return marker

    def read_meta(self, info: CheckpointInfo) -> dict:
        return json.loads(self._read(f"{info.path}/{META_FILE}"))

    # -- writing -------------------------------------------------------------------------------

    def save(self, step: int, state: dict, meta: dict | None = None) -> CheckpointInfo:
        """Write ``state`` as checkpoint ``step`` and commit it; prune old ones after the commit.

        Raises :class:`NonFiniteCheckpointError` (writing nothing) if any tensor is non-finite.
        """
        bad = non_finite_tensors(state)
        if bad:
            raise NonFiniteCheckpointError(
                f"refusing to write checkpoint step {step}: non-finite values in {', '.join(bad[:5])}"
                + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            )
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        marker = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "step": step}
        meta_bytes = json.dumps({"step": step, "time": time.time(), **(meta or {})}, indent=2).encode()
        name = checkpoint_name(step)
        final = f"{self.root}/{name}"
        tmp = f"{self.root}/.tmp-{name}-{uuid.uuid4().hex[:8]}"
        if self._fs is None:
            self._save_local(tmp, final, data, meta_bytes, marker)
        else:
            self._save_remote(final, data, meta_bytes, marker)
        self.prune()
        return CheckpointInfo(step=step, path=final)

    def _save_local(self, tmp: str, final: str, data: bytes, meta: bytes, marker: dict) -> None:
        tmp_dir, final_dir = Path(tmp), Path(final)
        tmp_dir.mkdir(parents=True)
        _write_synced(tmp_dir / STATE_FILE, data)
        _write_synced(tmp_dir / META_FILE, meta)
        if final_dir.exists():  # an uncommitted leftover of the same step (e.g. a crash after rename)
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
        fsync_dir(final_dir.parent)
        atomic_write_bytes(final_dir / MARKER_FILE, json.dumps(marker).encode())
        fsync_dir(final_dir)

    def _save_remote(self, final: str, data: bytes, meta: bytes, marker: dict) -> None:
        # Object stores have no atomic folder rename: write the files, then the marker object.
        assert self._fs is not None
        self._fs.create_dir(final, recursive=True)
        self._fs.delete_dir_contents(final, missing_dir_ok=True)
        for name, payload in (
            (STATE_FILE, data),
            (META_FILE, meta),
            (MARKER_FILE, json.dumps(marker).encode()),
        ):
            with self._fs.open_output_stream(f"{final}/{name}") as f:
                f.write(payload)

    def prune(self) -> None:
        """Keep the newest ``keep`` committed checkpoints; drop leftovers of interrupted writes."""
        committed = self.committed()
        for info in committed[: max(0, len(committed) - self.keep)]:
            self._delete_dir(info.path)
        newest = committed[-1].step if committed else -1
        for name in self._list_dirs():
            match = CHECKPOINT_NAME.match(name)
            # Uncommitted step folders older than the newest commit can only be crash leftovers.
            if (
                match is not None
                and int(match.group(1)) < newest
                and not self._exists(f"{self.root}/{name}/{MARKER_FILE}")
            ):
                self._delete_dir(f"{self.root}/{name}")
            elif name.startswith(".tmp-step-") and self._fs is None:
                tmp = Path(self.root) / name
                if time.time() - tmp.stat().st_mtime > 3600:  # not a write in progress elsewhere
                    shutil.rmtree(tmp, ignore_errors=True)

    def drop_ray_snapshot(self) -> bool:
        """Remove Ray Train's checkpoint-manager snapshot beside this store (``<run>/``
        :data:`~pipelines.runs.folder.RAY_SNAPSHOT`); True if there was one.

        Ray records every checkpoint a run reports and, when a run of the same name starts again,
        refuses to start if any of them is gone; this store prunes old ones itself, so a re-run
        after a stop would fail. The loop resumes from this store, not from Ray's record, so the
        record is dropped before a new ``fit``.
        """
        path = f"{self.root.rsplit('/', 1)[0]}/{RAY_SNAPSHOT}"
        if not self._exists(path):
            return False
        if self._fs is None:
            Path(path).unlink()
        else:
            self._fs.delete_file(path)
        return True

    def _delete_dir(self, path: str) -> None:
        if self._fs is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            self._fs.delete_dir(path)

    def __iter__(self) -> Iterator[CheckpointInfo]:
        return iter(self.committed())


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
