"""docs/architecture.md's import rules are the code's: the test reads the rules from the document.

The table under "## Import rules" gives, for each package, the project packages it may import and
where it may import Ray and MLflow. Every import statement in the tree (function-level ones
included) is checked against it, so the document cannot claim a rule the code breaks, and a new
import that breaks a rule fails here until the code or the documented rule changes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.import_graph import ROOT, project_modules

DOC = ROOT / "docs" / "architecture.md"
THIRD_PARTY = ("ray", "mlflow")
CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Rule:
    package: str
    may_import: frozenset[str]
    third_party: dict[str, str]  # "ray" -> "yes" | "no" | "only a.py, b.py"


def read_rules(text: str) -> list[Rule]:
    """The rows of the table that follows the "## Import rules" heading."""
    section = text.split("## Import rules", 1)
    assert len(section) == 2, f"{DOC} has no '## Import rules' section"
    lines = section[1].strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:  # the first table after the heading, to its first non-table line
        if not line.startswith("|"):
            break
        rows.append(line)
    header = [cell.strip().lower() for cell in rows[0].strip("|").split("|")]
    rules = []
    for line in rows[2:]:
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        (package,) = CODE.findall(cells["package"])
        rules.append(
            Rule(
                package=package,
                may_import=frozenset(CODE.findall(cells["may import from the project"])),
                third_party={name: cells[name] for name in THIRD_PARTY},
            )
        )
    return rules


def owner(module: str, rules: list[Rule]) -> Rule | None:
    """The rule of the most specific package that holds ``module``."""
    matching = [r for r in rules if module == r.package or module.startswith(r.package + ".")]
    return max(matching, key=lambda r: len(r.package), default=None)


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def allows(rule_text: str, relative_path: str) -> bool:
    text = rule_text.lower()
    if text.startswith("yes"):
        return True
    if text.startswith("only"):
        return relative_path in CODE.findall(rule_text)
    assert text.startswith("no"), (
        f"{DOC}: a Ray/MLflow cell reads 'yes', 'no' or 'only `file`': {rule_text!r}"
    )
    return False


def violations(rules: list[Rule], modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    found: set[str] = set()
    for name, path in sorted(modules.items()):
        rule = owner(name, rules)
        if rule is None:
            found.add(f"{name}: no row of the import rules covers it")
            continue
        for target in imported_names(path):
            top = target.split(".")[0]
            if top in THIRD_PARTY and not allows(rule.third_party[top], str(path.relative_to(root))):
                found.add(f"{name} imports {top}: {rule.package} may not import {top}")
            # `import pipelines` (a package root, docstring only) locates code to ship; it runs none
            in_project = top in ("pipelines", "datasets", "model") and target != top
            target_rule = owner(target, rules) if in_project else None
            if target_rule is None or target_rule is rule:
                continue
            if not any(
                target_rule.package == p or target_rule.package.startswith(p + ".") for p in rule.may_import
            ):
                found.add(
                    f"{name} imports {target_rule.package}: {rule.package} may import only {sorted(rule.may_import)}"
                )
    return sorted(found)


RULES = read_rules(DOC.read_text())


def test_every_module_keeps_the_documented_import_rules():
    assert violations(RULES, project_modules()) == []


def test_every_documented_package_exists():
    modules = project_modules()
    missing = [
        r.package for r in RULES if not any(m == r.package or m.startswith(r.package + ".") for m in modules)
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import ray\n", "may not import ray"),
        ("def f():\n    from mlflow import MlflowClient\n", "may not import mlflow"),
        ("from pipelines.config import schema\n", "may import only"),
    ],
)
def test_a_broken_rule_is_reported(tmp_path, source, expected):
    """The check itself: an import the rules forbid, function-level ones included, is named."""
    fake = tmp_path / "model" / "fake.py"
    fake.parent.mkdir()
    fake.write_text(source)
    rules = [
        Rule("model", frozenset(), {"ray": "no", "mlflow": "no"}),
        Rule("pipelines.config", frozenset({"model"}), {"ray": "no", "mlflow": "no"}),
    ]
    found = violations(rules, {"model.fake": fake}, root=tmp_path)
    assert len(found) == 1 and expected in found[0], found
