"""The training commands the launch manifests run, read the way each launcher reads them.

Three things start training on a cluster, and each spells its command differently: a KubeRay
RayJob's ``spec.entrypoint``; the Ray cluster launcher config, whose training runs are the
``make submit TRAIN_ARGS="..."`` recipes in its header (infra/submit.sh runs
``python -m pipelines.train $TRAIN_ARGS``); and the recipes in docs/cluster.md. Each command comes
back with the number of GPUs the cluster it targets can hold, so that a GPU cluster whose job
would train on CPU (``train.device: auto`` means CPU on a cluster) or asks for more GPUs than the
cluster has is caught before anyone pays for the nodes (tests/test_manifests.py resolves each
command with pipelines.train's own parser).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["python", "-m", "pipelines.train"]
# AWS instance families with NVIDIA GPUs: the launcher sizes a node's GPU resource from its type
# when the node type does not spell it.
GPU_INSTANCE_FAMILIES = (
    "g4dn",
    "g5",
    "g5g",
    "g6",
    "g6e",
    "gr6",
    "p3",
    "p3dn",
    "p4d",
    "p4de",
    "p5",
    "p5e",
    "p5en",
)


@dataclass(frozen=True)
class TrainCommand:
    source: str  # where the command is written, e.g. "infra/rayjob.yaml: spec.entrypoint"
    argv: list[str]  # the arguments after ``python -m pipelines.train``
    cluster_gpus: float  # GPUs the cluster it runs on can hold at most (0: a CPU cluster)


def kind(doc: Any) -> str:
    """What a YAML document in infra/ is: rayjob, rayservice, raycluster, cluster-launcher, runtime-env."""
    if not isinstance(doc, dict):
        return "unknown"
    if str(doc.get("apiVersion", "")).startswith("ray.io/"):
        return str(doc.get("kind", "")).lower()
    if "available_node_types" in doc or "head_node_type" in doc:
        return "cluster-launcher"
    if "working_dir" in doc or "pip" in doc or "env_vars" in doc:
        return "runtime-env"
    return "unknown"


def load(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _pod_gpus(template: dict) -> float:
    total = 0.0
    for container in (template.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        total += float(limits.get("nvidia.com/gpu", 0) or 0)
    return total


def raycluster_gpus(cluster_spec: dict) -> float:
    """GPUs of a KubeRay cluster spec's worker groups at their largest."""
    total = 0.0
    for group in cluster_spec.get("workerGroupSpecs") or []:
        pods = max(int(group.get("replicas", 0) or 0), int(group.get("maxReplicas", 0) or 0))
        total += pods * _pod_gpus(group.get("template") or {})
    return total


def node_type_gpus(node_type: dict) -> float:
    gpus = (node_type.get("resources") or {}).get("GPU")
    if gpus is not None:
        return float(gpus)
    instance = str((node_type.get("node_config") or {}).get("InstanceType", ""))
    return 1.0 if instance.split(".")[0] in GPU_INSTANCE_FAMILIES else 0.0


def launcher_gpus(config: dict) -> float:
    """GPUs of a cluster launcher config's worker node types at their largest (the head trains nothing)."""
    head = config.get("head_node_type")
    return sum(
        node_type_gpus(t) * int(t.get("max_workers", 0) or 0)
        for name, t in (config.get("available_node_types") or {}).items()
        if name != head
    )


def train_argv(command: str) -> list[str] | None:
    """The arguments of a ``python -m pipelines.train ...`` shell command; None for any other command."""
    argv = shlex.split(command, comments=True)
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # VAR=value prefixes
        argv = argv[1:]
    return argv[len(TRAIN) :] if argv[: len(TRAIN)] == TRAIN else None


_TRAIN_ARGS = re.compile(r'TRAIN_ARGS="([^"]*)"')


def submit_recipes(text: str) -> list[list[str]]:
    """``make submit TRAIN_ARGS="..."`` recipes in ``text`` (infra/submit.sh: python -m pipelines.train $TRAIN_ARGS)."""
    return [shlex.split(" ".join(m.group(1).split())) for m in _TRAIN_ARGS.finditer(text)]


def commands_in(path: Path, root: Path = ROOT) -> list[TrainCommand]:
    rel = path.relative_to(root).as_posix()
    out: list[TrainCommand] = []
    for doc in load(path):
        k = kind(doc)
        if k == "rayjob":
            spec = doc["spec"]
            argv = train_argv(spec["entrypoint"])
            if argv is None:
                raise ValueError(
                    f"{rel}: spec.entrypoint {spec['entrypoint']!r} is not python -m pipelines.train"
                )
            out.append(TrainCommand(f"{rel}: spec.entrypoint", argv, raycluster_gpus(spec["rayClusterSpec"])))
        elif k == "cluster-launcher":
            recipes = submit_recipes(path.read_text())
            if not recipes:
                raise ValueError(
                    f'{rel}: no make submit TRAIN_ARGS="..." recipe says what this cluster trains'
                )
            gpus = launcher_gpus(doc)
            out += [
                TrainCommand(f"{rel}: TRAIN_ARGS recipe {i + 1}", argv, gpus)
                for i, argv in enumerate(recipes)
            ]
    return out


def doc_commands(
    path: Path, cluster_gpus: float, gpu_section: str = "## A real cluster", root: Path = ROOT
) -> list[TrainCommand]:
    """Training recipes in a Markdown page: ``make submit TRAIN_ARGS="..."`` (which may wrap in
    prose) and ``python -m pipelines.train`` lines in its code blocks. Those under the heading
    ``gpu_section`` target the GPU cluster (``cluster_gpus``); the rest a local head (0)."""
    rel = path.relative_to(root).as_posix()
    text = path.read_text()
    headings: list[tuple[int, str]] = []  # (offset, heading) outside code blocks
    code: list[tuple[int, str]] = []  # (offset, line) inside them
    fenced, offset = False, 0
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            code.append((offset, line.rstrip("\n")))
        elif line.startswith("## "):
            headings.append((offset, line.strip()))
        offset += len(line)

    def at(pos: int) -> tuple[str, float]:
        section = next((h for o, h in reversed(headings) if o <= pos), "")
        return f"{rel}:{text.count(chr(10), 0, pos) + 1}", cluster_gpus if section == gpu_section else 0.0

    out = []
    for match in _TRAIN_ARGS.finditer(text):
        where, gpus = at(match.start())
        out.append(TrainCommand(where, submit_recipes(match.group(0))[0], gpus))
    for pos, line in code:
        if "python -m pipelines.train" in line:
            argv = train_argv(line[line.index("python -m pipelines.train") :].rstrip("\\ "))
            if argv is not None:
                where, gpus = at(pos)
                out.append(TrainCommand(where, argv, gpus))
    return out
