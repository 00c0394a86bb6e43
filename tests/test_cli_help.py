"""Every command answers ``--help`` (exit 0) and takes ``--log-level``.

The commands are found, not listed: each top-level ``pipelines/*.py`` with a ``def main``, plus
``python -m pipelines.tracking`` and ``python -m pipelines.bench`` (and each bench it dispatches
to), so a new command without them fails here.  ``main(["--help"])`` runs in-process, in an empty
working directory, so a command that ignored ``--help`` would not write into the repository.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_COMMANDS = ("pipelines/tracking/__main__.py", "pipelines/bench/__main__.py")


def _command_modules() -> list[str]:
    files = [p for p in sorted((ROOT / "pipelines").glob("*.py"))
             if re.search(r"^def main\(", p.read_text(), re.MULTILINE)]
    files += [ROOT / p for p in PACKAGE_COMMANDS]
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in files]


COMMANDS = _command_modules()


def _bench_names() -> list[str]:
    from pipelines.bench.__main__ import BENCHES

    return sorted(BENCHES)


def test_commands_are_found() -> None:
    assert {"pipelines.train", "pipelines.evaluate", "pipelines.summary", "pipelines.job_preflight",
            "pipelines.tracking.__main__", "pipelines.bench.__main__"} <= set(COMMANDS)


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")


def _help(module: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[object, str]:
    main = importlib.import_module(module).main
    assert list(inspect.signature(main).parameters), f"{module}.main() takes no argv, so it cannot parse --help"
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code or 0, out.out + out.err


@pytest.mark.parametrize("module", COMMANDS)
def test_command_answers_help_and_takes_log_level(module: str, capsys: pytest.CaptureFixture) -> None:
    code, text = _help(module, ["--help"], capsys)
    assert code == 0, f"python -m {module} --help exited {code}:\n{text}"
    assert "--log-level" in text, f"python -m {module} --help does not offer --log-level:\n{text}"


@pytest.mark.parametrize("bench", _bench_names())
def test_each_bench_answers_help_and_takes_log_level(bench: str, capsys: pytest.CaptureFixture) -> None:
    code, text = _help("pipelines.bench.__main__", [bench, "--help"], capsys)
    assert code == 0, f"python -m pipelines.bench {bench} --help exited {code}:\n{text}"
    assert "--log-level" in text, f"python -m pipelines.bench {bench} --help does not offer --log-level:\n{text}"
