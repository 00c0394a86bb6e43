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
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from datasets.files import fsync_dir

STATE_FILE = "state.pt"
META_FILE = "meta.json"
MARKER_FILE = "COMMITTED"
CHECKPOINT_NAME = re.compile(r"^step-(\d{9})$")

log = logging.getLogger(__name__)


class NonFiniteCheckpointError(RuntimeError):
    """Raised instead of writing a checkpoint whose tensors hold NaN or Inf."""


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str  # folder of the checkpoint (local path or path inside the URL filesystem)


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """Names of floating-point tensors in a nested state that hold NaN or Inf."""
    bad: list[str] = []
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            if not bool(torch.isfinite(obj).all()):
                bad.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            bad.extend(non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            bad.extend(non_finite_tensors(value, f"{prefix}[{i}]"))
    return bad


def _is_url(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's checkpoints


class CheckpointStore:
    """Committed checkpoints of one run, in a local folder or under a pyarrow-supported URL."""

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        root = str(root)
        if _is_url(root):
            import pyarrow.fs

            self._fs, self.root = pyarrow.fs.FileSystem.from_uri(root)
        else:
            self._fs = None
            self.root = str(Path(root.removeprefix("file://")).absolute())

    def pyarrow_filesystem(self) -> Any:
        """The pyarrow filesystem that ``CheckpointInfo.path`` is relative to (for Ray)."""
        if self._fs is not None:
            return self._fs
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    # -- reading -------------------------------------------------------------------------------

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
        for name in self._list_dirs():
            match = CHECKPOINT_NAME.match(name)
            if match is None:
                continue
            path = f"{self.root}/{name}"
            if self._exists(f"{path}/{MARKER_FILE}"):
                found.append(CheckpointInfo(step=int(match.group(1)), path=path))
        return sorted(found, key=lambda c: c.step)

    def _exists(self, path: str) -> bool:
        if self._fs is None:
            return Path(path).is_file()
        import pyarrow.fs

        return self._fs.get_file_info(path).type == pyarrow.fs.FileType.File

    def verify(self, info: CheckpointInfo) -> bytes:
        """The bytes of ``state.pt`` if they match the commit marker, else raise ``ValueError``."""
        marker = json.loads(self._read_bytes(f"{info.path}/{MARKER_FILE}"))
        data = self._read_bytes(f"{info.path}/{STATE_FILE}")
        if len(data) != marker["size"] or hashlib.sha256(data).hexdigest() != marker["sha256"]:
            raise ValueError(f"{info.path}: {STATE_FILE} does not match its commit marker")
        return data

    def load(self, info: CheckpointInfo, map_location: str | torch.device = "cpu") -> dict:
        data = self.verify(info)
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)

    def load_latest(self, map_location: str | torch.device = "cpu") -> tuple[CheckpointInfo, dict] | None:
        """The newest checkpoint that verifies; damaged ones are skipped with a warning."""
        for info in reversed(self.committed()):
            try:
                return info, self.load(info, map_location)
            except Exception as exc:  # a damaged checkpoint must not stop a resume from an older one
                log.warning("skipping checkpoint %s: %s", info.path, exc)
        return None

    def marker(self, info: CheckpointInfo) -> dict:
        """The commit marker of a checkpoint (holds the state file's sha256)."""
        return json.loads(self._read_bytes(f"{info.path}/{MARKER_FILE}"))

    def read_meta(self, info: CheckpointInfo) -> dict:
        return json.loads(self._read_bytes(f"{info.path}/{META_FILE}"))

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
        marker_tmp = final_dir / f".{MARKER_FILE}.tmp"
        _write_synced(marker_tmp, json.dumps(marker).encode())
        os.replace(marker_tmp, final_dir / MARKER_FILE)
        fsync_dir(final_dir)

    def _save_remote(self, final: str, data: bytes, meta: bytes, marker: dict) -> None:
        # Object stores have no atomic folder rename: write the files, then the marker object.
        assert self._fs is not None
        self._fs.create_dir(final, recursive=True)
        self._fs.delete_dir_contents(final, missing_dir_ok=True)
        for name, payload in ((STATE_FILE, data), (META_FILE, meta), (MARKER_FILE, json.dumps(marker).encode())):
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
            if match is not None and int(match.group(1)) < newest and \
                    not self._exists(f"{self.root}/{name}/{MARKER_FILE}"):
                self._delete_dir(f"{self.root}/{name}")
            elif name.startswith(".tmp-step-") and self._fs is None:
                tmp = Path(self.root) / name
                if time.time() - tmp.stat().st_mtime > 3600:  # not a write in progress elsewhere
                    shutil.rmtree(tmp, ignore_errors=True)

    def drop_ray_snapshot(self) -> bool:
        """Remove Ray Train's checkpoint-manager snapshot beside this store (``<run>/
        checkpoint_manager_snapshot.json``); True if there was one.

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
