"""Crash-safe file and folder writes, and file digests: the one implementation every stage uses.

* :func:`atomic_write_bytes` writes a file through a hidden ``.NAME.partial`` sibling, fsynced
  and renamed, so a reader never sees half a file; :func:`atomic_write_text` is the same for text.
* :func:`replace_dir` puts a finished staging folder in place of the final one with renames
  only; :func:`staged_dir` wraps a whole build (staging folder, swap on success, cleanup on
  failure).  An interrupted build leaves the previous folder intact.
* :func:`file_sha256` is the hex SHA-256 of a file's bytes, read in chunks (None when absent).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_sha256(path: str | Path) -> str | None:
    """Hex SHA-256 of the file's bytes (read in 1 MiB chunks); None when ``path`` is not a file,
    so a record can say "absent" (a run's ``dvc.lock`` digest, say) without a check first."""
    if not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and a rename.

    ``durable=False`` skips the fsync (a reader still never sees half a file; only a machine crash
    can cost it): for the many small files written into a :func:`staged_dir` folder, where one
    fsync each would dominate the write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` as :func:`atomic_write_bytes` does."""
    atomic_write_bytes(path, text.encode())


def replace_dir(staging: str | Path, final: str | Path) -> None:
    """Put the finished folder ``staging`` in place of ``final`` with renames only.

    An existing ``final`` is first renamed to a hidden ``.NAME.old-PID`` sibling; if the
    rename of ``staging`` then fails, it is renamed back, so ``final`` is never lost.  The
    parent folder is fsynced before the old copy is deleted.  ``staging`` must be a sibling
    of ``final`` (a rename does not cross file systems).
    """
    staging, final = Path(staging), Path(final)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)  # left by an interrupted swap of a process with the same id
    if final.exists():
        os.replace(final, old)
        try:
            os.replace(staging, final)
        except BaseException:
            os.replace(old, final)
            raise
    else:
        os.replace(staging, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build a folder under a hidden ``.NAME.partial-PID`` sibling, swapped in for ``final`` on success.

    ``with staged_dir(root) as tmp: write into tmp``: when the block ends normally the
    folder replaces ``final`` (:func:`replace_dir`); when it raises (KeyboardInterrupt
    included) the partial folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
