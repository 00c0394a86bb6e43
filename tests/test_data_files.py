"""datasets.files: the crash-safe folder swap, atomic writes and file digests every stage uses."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from datasets import files
from datasets.files import atomic_write_bytes, atomic_write_text, file_sha256, replace_dir, staged_dir


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_file_sha256_and_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(path, b"x" * 3_000_000)
    assert file_sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.bin"]  # no .partial left
    assert file_sha256(tmp_path / "missing") is None


def test_atomic_write_text_and_the_write_without_fsync(tmp_path: Path, monkeypatch) -> None:
    synced = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd))
    atomic_write_text(tmp_path / "a" / "t.json", "{\"é\": 1}\n")
    assert (tmp_path / "a" / "t.json").read_bytes() == "{\"é\": 1}\n".encode() and len(synced) == 1
    atomic_write_bytes(tmp_path / "a" / "t.json", b"again", durable=False)
    assert (tmp_path / "a" / "t.json").read_bytes() == b"again" and len(synced) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["t.json"]


def test_staged_dir_replaces_the_previous_folder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    for text in ("old", "new"):
        with staged_dir(final) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text(text)
        assert _tree(final) == {"f.txt": text.encode()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_failure_keeps_the_previous_folder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "f.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(final) as tmp:
            tmp.mkdir()
            (tmp / "f.txt").write_text("half")
            raise KeyboardInterrupt
    assert _tree(final) == {"f.txt": b"kept"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_puts_the_old_folder_back_when_the_second_rename_fails(tmp_path: Path, monkeypatch) -> None:
    final, staging = tmp_path / "out", tmp_path / ".out.staging"
    final.mkdir()
    (final / "f.txt").write_text("kept")
    staging.mkdir()
    (staging / "f.txt").write_text("new")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # staging -> final
            raise OSError("disk went away")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OSError, match="disk went away"):
        replace_dir(staging, final)
    assert _tree(final) == {"f.txt": b"kept"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.staging", "out"]
