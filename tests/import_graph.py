"""The project's static import graph: which project files a module runs, function-level imports included.

Used by the tests that keep dvc.yaml's code deps honest and the import graph free of cycles.
A module's closure also holds the ``__init__.py`` of every package on its way (Python runs them)
and the modules it starts as ``python -m <module>`` subprocesses (a ``"-m", "<module>"`` pair of
string constants in a list or tuple).
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "datasets", "model")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file a dotted project module name runs, or None when it is not a project module."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.resolve().relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _with_parents(name: str, root: Path) -> set[str]:
    """A module and every package above it that Python runs to import it."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]), root)}


@cache
def direct_imports(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Project modules a file imports anywhere in its body (or starts with ``python -m``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name, root)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= _with_parents(base, root)
            for alias in node.names:  # `from pkg import submodule`
                if module_file(f"{base}.{alias.name}", root):
                    found |= _with_parents(f"{base}.{alias.name}", root)
        elif isinstance(node, (ast.List, ast.Tuple)):
            items = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None for e in node.elts]
            for flag, target in zip(items, items[1:]):
                if flag == "-m" and target and module_file(target, root):
                    found |= _with_parents(target, root)
    found.discard(me)
    return frozenset(found)


def closure(module: str, root: Path = ROOT) -> set[Path]:
    """Every project file that running ``python -m module`` may execute."""
    seen: set[str] = set()
    todo = sorted(_with_parents(module, root))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is not None:
            todo.extend(direct_imports(path, root) - seen)
    return {module_file(n, root) for n in seen if module_file(n, root) is not None}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            out[module_name(path, root)] = path
    return out


def find_cycles(root: Path = ROOT) -> list[list[str]]:
    """Import cycles between project modules (Tarjan's strongly connected components, size > 1)."""
    modules = project_modules(root)
    # A package's __init__ is run by importing any of its children; that edge is Python's, not the
    # code's, so only the imports written in each file count here.
    graph = {name: sorted(direct_imports(path, root) & modules.keys()) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles
