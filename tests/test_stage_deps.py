"""dvc.yaml's code deps cannot go stale, and the project's imports point one way, without cycles.

Each stage's import closure (static: every ``import`` in every file it reaches, function-level ones
included, and the commands it starts with ``python -m``) must lie under the stage's deps, so that
changing any file a stage runs reruns that stage.  A package ``__init__.py`` that holds only a
docstring runs nothing and is not required.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.import_graph import ROOT, closure, direct_imports, find_cycles, module_name, project_modules

PIPELINES = {"dvc.yaml": ROOT, "portrait/dvc.yaml": ROOT, "ablation/dvc.yaml": ROOT}
CMD_MODULE = re.compile(r"python -m ([\w.]+)")


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def stages(dvc_file: str = "dvc.yaml", root: Path = ROOT) -> dict[str, tuple[str, list[str]]]:
    """stage name -> (module its cmd runs, code deps relative to the repository root)."""
    doc = yaml.safe_load((root / dvc_file).read_text())
    out = {}
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        match = CMD_MODULE.search(body["cmd"])
        assert match, f"{dvc_file}:{name}: cmd does not run a python -m module: {body['cmd']!r}"
        base = (root / dvc_file).parent / body.get("wdir", ".")
        deps = [str((base / d).resolve().relative_to(root)) for d in body.get("deps", []) if "${" not in d]
        out[f"{dvc_file}:{name}"] = (match.group(1), deps)
    return out


def uncovered(module: str, deps: list[str], root: Path = ROOT) -> list[str]:
    """Project files in ``module``'s import closure that no dep covers."""
    missing = []
    for path in sorted(closure(module, root)):
        rel = str(path.relative_to(root))
        if path.name == "__init__.py" and _docstring_only(path):
            continue
        if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
            missing.append(rel)
    return missing


ALL_STAGES = {k: v for f in PIPELINES for k, v in stages(f).items()}


@pytest.mark.parametrize("stage", sorted(ALL_STAGES))
def test_stage_deps_cover_its_import_closure(stage):
    module, deps = ALL_STAGES[stage]
    missing = uncovered(module, deps)
    assert not missing, f"{stage} runs {module}, which imports files its deps do not cover: {missing}"


def test_the_check_fails_when_a_dep_is_removed():
    module, deps = ALL_STAGES["dvc.yaml:train"]
    assert "pipelines/training" in deps
    missing = uncovered(module, [d for d in deps if d != "pipelines/training"])
    assert "pipelines/training/loop.py" in missing and "pipelines/training/checkpoint.py" in missing
    # A function-level import counts: datasets/shards/loader.py is imported inside a function of the loop.
    assert "datasets/shards/loader.py" in uncovered(module, [d for d in deps if d != "datasets/shards"])


def test_closure_follows_function_level_imports_and_python_m(tmp_path):
    pkg = tmp_path / "pipelines"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""doc"""\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "late.py").write_text("X = 1\n")
    (pkg / "other.py").write_text("Y = 2\n")
    (pkg / "cmd.py").write_text("import subprocess, sys\n\ndef main():\n    from pipelines.sub import late\n"
                                "    subprocess.run([sys.executable, '-m', 'pipelines.other'])\n")
    names = {str(p.relative_to(tmp_path)) for p in closure("pipelines.cmd", tmp_path)}
    assert names == {"pipelines/__init__.py", "pipelines/cmd.py", "pipelines/sub/__init__.py",
                     "pipelines/sub/late.py", "pipelines/other.py"}


def test_import_graph_has_no_cycle():
    assert find_cycles() == []


def test_nothing_imports_an_entry_point():
    """Top-level pipelines/*.py are commands: library code never imports one (it may start one)."""
    commands = {module_name(p) for p in (ROOT / "pipelines").glob("*.py") if p.name != "__init__.py"}
    offenders = []
    for name, path in project_modules().items():
        for target in direct_imports(path) & commands:
            source = path.read_text()
            if re.search(rf"(from|import)\s+{re.escape(target)}\b|from pipelines import .*\b{target.split('.')[-1]}\b",
                         source):
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


def test_no_private_names_across_modules():
    """``from x import _name`` between project modules couples them to internals; make it public."""
    offenders = []
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("pipelines", "datasets",
                                                                                          "model"):
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_")]
    assert not offenders, offenders


def test_no_importlib_dispatch():
    """Callables are found by a registry dict, not by resolving ``"module:function"`` strings."""
    offenders = [name for name, path in project_modules().items() if "importlib.import_module" in path.read_text()]
    assert not offenders, offenders


def test_subpackages_import_one_way():
    """Between pipelines' subpackages the imports form a DAG too (docs/architecture.md), not only
    between modules: e.g. registry -> serving -> apps -> tracking, never back."""
    modules = project_modules()

    def package(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if parts[0] == "pipelines" and len(parts) > 2 else parts[0]

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        for target in direct_imports(path, ROOT):
            a, b = package(name), package(target)
            if a != b and a.startswith("pipelines.") and b.startswith("pipelines.") and a.count(".") == b.count("."):
                edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    loops = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if reaches(b, a, set()))
    assert not loops, loops


def test_runs_sits_below_the_other_subpackages():
    """pipelines/runs (the run layout, the stage records, the generator source rule) is read and
    written by training, tracking, evaluation, the apps and the registry alike, so it imports no
    pipelines subpackage but config: it is the bottom of the DAG with config."""
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in project_modules().items()
        if name.startswith("pipelines.runs.")
        for target in direct_imports(path, ROOT)
        if target.count(".") >= 1 and target.startswith("pipelines.")
        and not target.startswith(("pipelines.runs", "pipelines.config"))
    )
    assert not offenders, offenders
