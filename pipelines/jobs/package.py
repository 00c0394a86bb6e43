"""The files a Ray job's ``working_dir`` uploads, chosen the way Ray's runtime env chooses them.

Ray zips the working dir minus the runtime env's ``excludes`` (gitignore-style patterns relative
to the working dir) and minus what each folder's ``.gitignore`` (unless
``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1``) and ``.rayignore`` files exclude, relative to that folder;
an excluded folder is not entered. The upload must stay under the gRPC message limit
(``RAY_max_grpc_message_size``, 512 MiB by default). Ray's own walker is internal API that moves
between releases, so the rules are implemented here on the ``pathspec`` library (the same
gitwildmatch dialect) and tested against real trees.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from pathspec import PathSpec

DEFAULT_UPLOAD_LIMIT = 512 * 2**20  # Ray's gRPC message size, the runtime env upload limit


def upload_limit() -> int:
    """Ray's limit for one runtime-env package, honouring the same environment variable as Ray."""
    return int(os.environ.get("RAY_max_grpc_message_size", DEFAULT_UPLOAD_LIMIT))


def include_gitignore() -> bool:
    return os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"


Matcher = Callable[[Path], bool]


def _matcher(base: Path, lines: list[str]) -> Matcher:
    spec = PathSpec.from_lines("gitwildmatch", lines)

    def match(path: Path) -> bool:
        rel = path.relative_to(base).as_posix()
        return spec.match_file(rel + "/" if path.is_dir() else rel)

    return match


def _ignore_files(folder: Path, gitignore: bool) -> list[Matcher]:
    names = [".gitignore", ".rayignore"] if gitignore else [".rayignore"]
    found = []
    for name in names:
        path = folder / name
        if path.is_file():
            found.append(_matcher(folder, path.read_text(errors="replace").splitlines()))
    return found


def package_files(root: Path | str, excludes: list[str], gitignore: bool | None = None) -> Iterator[Path]:
    """Every file the package of ``root`` holds (folders pruned where excluded)."""
    root = Path(root).absolute()
    gitignore = include_gitignore() if gitignore is None else gitignore

    def walk(folder: Path, inherited: list[Matcher]) -> Iterator[Path]:
        matchers = inherited + _ignore_files(folder, gitignore)
        for entry in sorted(folder.iterdir()):
            if any(m(entry) for m in matchers):
                continue
            if entry.is_dir() and not entry.is_symlink():
                yield from walk(entry, matchers)
            elif entry.is_file():
                yield entry

    yield from walk(root, [_matcher(root, excludes)])


def package_size(root: Path | str, excludes: list[str], gitignore: bool | None = None) -> int:
    """Bytes of the zip of the package (deflated, as Ray zips it)."""
    root = Path(root).absolute()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "package.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in package_files(root, excludes, gitignore):
                zf.write(path, path.relative_to(root).as_posix())
        return target.stat().st_size


def largest_files(
    root: Path | str, excludes: list[str], top: int = 5, gitignore: bool | None = None
) -> list[tuple[int, str]]:
    root = Path(root).absolute()
    sizes = [
        (p.stat().st_size, p.relative_to(root).as_posix()) for p in package_files(root, excludes, gitignore)
    ]
    return sorted(sizes, reverse=True)[:top]
