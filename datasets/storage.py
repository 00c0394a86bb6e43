"""Where shards live: a local folder or any URL fsspec reaches (``s3://``, ``gs://``, ``file://``,
``http(s)://`` read-only).

One small vocabulary for the data stages, so no caller needs to know which kind of location it
got: :func:`join`, :func:`read_bytes`, :func:`write_bytes`, :func:`exists`, :func:`remove`,
:func:`list_names`, :func:`read_verified`.

Atomicity differs by kind and this module is where that difference is handled:

* a local path (or ``file://``) is written through a hidden ``.NAME.partial`` sibling and a
  rename (:func:`datasets.files.atomic_write_bytes`);
* an object store has no rename, but one PUT is all-or-nothing: an object is either absent or
  complete.  Writers therefore send each shard as one object and write the object that lists them
  (``manifest.json``) last.

Credentials come from the storage library's own chain (for S3: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` / instance roles, ``AWS_ENDPOINT_URL`` for an
S3-compatible server); nothing here reads, logs or prints them.  Every error raised here is a
:class:`StorageError` naming the URL (without any ``user:password@`` part) and what went wrong,
scrubbed of secret values that a library message might echo.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from datasets.files import atomic_write_bytes

T = TypeVar("T")

READ_ONLY_SCHEMES = ("http", "https")
CHUNK = 1 << 20
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Values that must never appear in a message, even when a library echoes them back.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
    "AZURE_STORAGE_KEY",
)


# The standard settings every S3 client here reads from the environment (s3fs/botocore for shards,
# pyarrow's S3FileSystem for checkpoints and Ray Train's run folder: pyarrow >= 15 reads
# AWS_ENDPOINT_URL(_S3) too). Processes on other Ray nodes start from their node's environment,
# not this one, so whoever starts remote work passes these on (:func:`client_env`).
CLIENT_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_PROFILE",
)
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def client_env(credentials: bool) -> dict[str, str]:
    """The object-store client settings set in this process's environment, to hand to workers.

    ``credentials`` adds the access keys: only for a cluster on this machine, since a Ray runtime
    env is shown in the dashboard; nodes of a real cluster use their own chain (instance roles)."""
    keys = CLIENT_ENV + (CREDENTIAL_ENV if credentials else ())
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


class StorageError(OSError):
    """A location could not be read or written; the message names the URL, never a secret."""


class ChecksumError(StorageError):
    """An object's bytes do not match the sha256 its manifest records."""


def scheme(location: str | Path) -> str:
    """``"s3"``, ``"gs"``, … for a URL; ``""`` for a plain local path (and ``file://``)."""
    m = _SCHEME.match(str(location))
    if not m or m.group(1).lower() == "file":
        return ""
    return m.group(1).lower()


def is_url(location: str | Path) -> bool:
    """True for a location fsspec must open (anything but a local path or ``file://``)."""
    return scheme(location) != ""


def local_path(location: str | Path) -> Path:
    """The local path of a plain path or a ``file://`` URL."""
    text = str(location)
    if text.lower().startswith("file://"):
        return Path(text[len("file://") :])
    if is_url(text):
        raise ValueError(f"{safe_url(text)} is not a local path")
    return Path(text)


def location(text: str | Path) -> Path | str:
    """A params value as callers hold it: ``Path`` for a local folder, the URL string otherwise."""
    return str(text) if is_url(text) else local_path(text)


def sha256_of(location: str | Path) -> str | None:
    """Hex sha256 of a file or object; None when it is absent (as :func:`datasets.files.file_sha256`)."""
    try:
        return hashlib.sha256(read_bytes(location)).hexdigest()
    except FileNotFoundError:
        return None


def join(base: str | Path, name: str) -> str:
    """``base/name`` for a folder or a URL prefix (``Path`` would fold ``s3://`` into ``s3:/``)."""
    text = str(base)
    if is_url(text):
        return f"{text.rstrip('/')}/{name}"
    return str(local_path(text) / name)


def safe_url(location: str | Path) -> str:
    """The location with any ``user:password@`` part removed, for messages."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", str(location))


def scrub(text: str) -> str:
    """``text`` with secret values from the environment replaced by ``***``."""
    for key in SECRET_ENV:
        value = os.environ.get(key)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _fs(location: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise StorageError(
            f"{safe_url(location)}: no file system for this URL ({scrub(str(exc))}); "
            f"for s3:// install s3fs, for gs:// gcsfs"
        ) from None


def _call(location: str, what: str, fn: Callable[[], T]) -> T:
    """Run a storage call; any failure becomes a :class:`StorageError` naming the URL and the cause."""
    try:
        return fn()
    except StorageError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"{safe_url(location)}: not found") from None
    except PermissionError as exc:
        raise StorageError(
            f"{safe_url(location)}: {what} refused: {scrub(str(exc))} (check the credentials "
            "the storage library reads, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
            "AWS_PROFILE for s3://)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, gcsfs: each has its own error types
        raise StorageError(
            f"{safe_url(location)}: {what} failed: {type(exc).__name__}: {scrub(str(exc))}"
        ) from None


def read_bytes(location: str | Path) -> bytes:
    """The whole file or object; FileNotFoundError (naming it) when absent."""
    text = str(location)
    if not is_url(text):
        path = local_path(text)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found")
        return path.read_bytes()
    fs, key = _fs(text)
    return _call(text, "read", lambda: fs.cat_file(key))


def read_verified(location: str | Path, sha256: str | None, size: int | None = None) -> bytes:
    """The file's bytes, hashed chunk by chunk as they arrive; :class:`ChecksumError` when the
    size or sha256 differs from what the manifest recorded (a stale, truncated or altered object)."""
    text = str(location)
    digest = hashlib.sha256()
    parts: list[bytes] = []

    def pull(fh: Any) -> None:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
            parts.append(chunk)

    if not is_url(text):
        path = local_path(text)
        try:
            with open(path, "rb") as fh:
                pull(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not found") from None
    else:
        fs, key = _fs(text)
        _call(text, "read", lambda: _pull_remote(fs, key, pull))
    data = b"".join(parts)
    if size is not None and len(data) != int(size):
        raise ChecksumError(
            f"{safe_url(text)}: {len(data)} bytes, the manifest says {size} (truncated or replaced)"
        )
    if sha256 and digest.hexdigest() != sha256:
        raise ChecksumError(
            f"{safe_url(text)}: sha256 {digest.hexdigest()[:16]}… does not match the manifest's "
            f"{sha256[:16]}… (altered or replaced since it was listed)"
        )
    return data


def _pull_remote(fs: Any, path: str, pull: Callable[[Any], None]) -> None:
    with fs.open(path, "rb", block_size=CHUNK) as fh:
        pull(fh)


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write a complete file or object: local through a rename, remote as one PUT."""
    text = str(location)
    if not is_url(text):
        atomic_write_bytes(local_path(text), data)
        return
    if scheme(text) in READ_ONLY_SCHEMES:
        raise StorageError(
            f"{safe_url(text)}: {scheme(text)}:// is read-only here; write shards to a "
            "local folder or an object store (s3://, gs://)"
        )
    fs, path = _fs(text)
    _call(text, "write", lambda: fs.pipe_file(path, data))


def exists(location: str | Path) -> bool:
    text = str(location)
    if not is_url(text):
        return local_path(text).exists()
    fs, path = _fs(text)
    return bool(_call(text, "lookup", lambda: fs.exists(path)))


def remove(location: str | Path) -> None:
    """Delete a file or object if present."""
    text = str(location)
    if not is_url(text):
        local_path(text).unlink(missing_ok=True)
        return
    fs, path = _fs(text)

    def rm() -> None:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    _call(text, "delete", rm)


def list_names(prefix: str | Path) -> list[str]:
    """Base names directly under a folder or URL prefix ([] when there is none)."""
    text = str(prefix)
    if not is_url(text):
        path = local_path(text)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    fs, key = _fs(text)

    def ls() -> list[str]:
        try:
            entries = fs.ls(key, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    return _call(text, "list", ls)
