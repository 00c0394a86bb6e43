"""pipelines/jobs/package.py picks the files Ray's runtime env would upload.

Ray's walker is internal API; this test uses it only as the oracle, so a Ray upgrade that changes
its rules fails here instead of silently letting the preflight check a different file set.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipelines.jobs.package import largest_files, package_files, package_size, upload_limit


def _tree(root: Path) -> None:
    files = {
        "code.py": "x", "README.md": "x", "data/raw/a.jpg": "x" * 100, "data/keep.txt": "x",
        "runs/r1/ckpt.pt": "x" * 50, "sub/.gitignore": "*.log\nbuild/\n", "sub/a.log": "x", "sub/b.py": "x",
        "sub/build/out.o": "x", "sub/deep/c.log": "x", ".gitignore": "runs/\n/mlruns.db\n*.pyc\n",
        "mlruns.db": "x", "sub/mlruns.db": "x", "pkg/mod.pyc": "x", ".rayignore": "notes/\n",
        "notes/todo.txt": "x", "pkg/__init__.py": "x",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _ray_files(root: Path, excludes: list[str], gitignore: bool) -> set[str]:
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    found: set[str] = set()

    def visit(path: Path) -> None:
        if path.is_file():
            found.add(path.relative_to(root).as_posix())

    quiet = logging.getLogger("test.package")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    _dir_travel(root, [_get_excludes(root, excludes)], visit, include_gitignore=gitignore, logger=quiet)
    return found


@pytest.mark.parametrize("gitignore", [True, False])
@pytest.mark.parametrize("excludes", [[], ["/data/raw/"], ["data/", "*.md"]])
def test_same_files_as_rays_own_packaging(tmp_path, excludes, gitignore):
    _tree(tmp_path)
    ours = {p.relative_to(tmp_path).as_posix() for p in package_files(tmp_path, excludes, gitignore)}
    assert ours == _ray_files(tmp_path, excludes, gitignore)
    assert ("runs/r1/ckpt.pt" in ours) == (not gitignore) and "notes/todo.txt" not in ours


def test_sizes_and_largest(tmp_path):
    _tree(tmp_path)
    assert largest_files(tmp_path, [], top=1, gitignore=True) == [(100, "data/raw/a.jpg")]
    assert 0 < package_size(tmp_path, ["/data/"], gitignore=True) < package_size(tmp_path, [], gitignore=True)


def test_upload_limit_follows_rays_variable(monkeypatch):
    monkeypatch.delenv("RAY_max_grpc_message_size", raising=False)
    assert upload_limit() == 512 * 2**20
    monkeypatch.setenv("RAY_max_grpc_message_size", "1000")
    assert upload_limit() == 1000
