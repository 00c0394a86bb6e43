"""Every launch manifest in infra/ (and every training recipe in docs/cluster.md) trains what it
says: its command parses with pipelines.train's own argument parser, resolves with the command's
own config loading (--dump-config), and on a GPU cluster places every worker on a GPU the cluster
can hold. `train.device: auto` means CPU on a Ray cluster, so a GPU manifest that forgets the
device would rent GPU nodes and train on their CPUs with gloo."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from pipelines import train
from pipelines.jobs import manifests
from pipelines.training.placement import decide, gpus_needed

ROOT = Path(__file__).resolve().parents[1]
INFRA = sorted((ROOT / "infra").glob("*.yaml"))
KNOWN = {"rayjob", "rayservice", "cluster-launcher", "runtime-env"}


def _commands() -> list[manifests.TrainCommand]:
    cmds: list[manifests.TrainCommand] = []
    for path in INFRA:
        cmds += manifests.commands_in(path)
    launcher = [manifests.launcher_gpus(d) for p in INFRA for d in manifests.load(p)
                if manifests.kind(d) == "cluster-launcher"]
    cmds += manifests.doc_commands(ROOT / "docs/cluster.md", cluster_gpus=max(launcher, default=0.0))
    return cmds


COMMANDS = _commands()


def resolve(argv: list[str]) -> tuple[int, dict | None, str]:
    """``python -m pipelines.train ARGV --dump-config`` in this process, from the repository root:
    the command's own parser and config loading. Returns (exit status, the config or None, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = train.main([*argv, "--dump-config"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(cwd)
    return code, (json.loads(out.getvalue()) if code == 0 else None), err.getvalue()


def test_every_manifest_in_infra_is_one_the_checks_know():
    kinds = {p.name: [manifests.kind(d) for d in manifests.load(p)] for p in INFRA}
    unknown = {name: k for name, k in kinds.items() if not k or set(k) - KNOWN}
    assert not unknown, f"manifests whose training command no test reads: {unknown}"
    assert {"rayjob", "cluster-launcher"} <= {k for ks in kinds.values() for k in ks}


def test_the_gpu_manifests_and_recipes_are_all_found():
    gpu = [c.source for c in COMMANDS if c.cluster_gpus > 0]
    assert any(s.startswith("infra/rayjob.yaml") for s in gpu), gpu
    assert any(s.startswith("infra/cluster.yaml") for s in gpu), gpu
    assert any(s.startswith("docs/cluster.md") for s in gpu), gpu


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.source for c in COMMANDS])
def test_training_command_resolves_and_a_gpu_cluster_trains_on_its_gpus(cmd):
    code, cfg, err = resolve(cmd.argv)
    assert code == 0, f"{cmd.source}: python -m pipelines.train {' '.join(cmd.argv)} does not resolve:\n{err}"
    if cmd.cluster_gpus <= 0:
        return
    train = cfg["train"]
    assert train["workers"] > 0, f"{cmd.source}: --workers 0 trains in the driver, on the head, not on the GPU workers"
    placement = decide(train["device"], gpus_per_worker=train["gpus_per_worker"],
                       threads_per_worker=train["threads_per_worker"], on_cluster=True, local_cuda=False)
    assert placement.device == "cuda" and placement.backend == "nccl", (
        f"{cmd.source}: a GPU cluster would train on CPU ({placement.note})")
    need = gpus_needed(placement, train["workers"])
    assert need <= cmd.cluster_gpus, (f"{cmd.source}: {train['workers']} workers x {train['gpus_per_worker']} GPU "
                                      f"need {need:g} GPUs; the cluster holds at most {cmd.cluster_gpus:g}")


def test_a_gpu_manifest_left_on_device_auto_is_caught(tmp_path):
    """The check itself: the RayJob's entrypoint without the GPU profile (train.device: auto)
    resolves, and is refused for its GPU workers."""
    job = next(c for c in COMMANDS if c.source.startswith("infra/rayjob.yaml"))
    code, cfg, _ = resolve(["--workers", "4"])
    assert code == 0 and cfg["train"]["device"] == "auto"
    placement = decide(cfg["train"]["device"], gpus_per_worker=1, threads_per_worker=1, on_cluster=True,
                       local_cuda=False)
    assert placement.device == "cpu" and job.cluster_gpus >= 4


def test_an_unknown_argument_in_a_manifest_is_caught():
    code, cfg, err = resolve(["--params", "profiles/deepfashion-paper-gpu.yaml", "--device", "cuda"])
    assert code == 2 and cfg is None and "unrecognized arguments: --device" in err
    code, _, err = resolve(["--set", "train.devices=cuda"])
    assert code == 2 and "train.devices" in err


def test_commands_are_read_the_way_the_launchers_run_them():
    assert manifests.train_argv("RAY_ADDRESS=x:1 python -m pipelines.train --dataset a  # note") == ["--dataset", "a"]
    assert manifests.train_argv("python -m pipelines.evaluate") is None
    assert manifests.submit_recipes('make submit TRAIN_ARGS="--params p.yaml\n  --workers 8"') == [
        ["--params", "p.yaml", "--workers", "8"]]
    job = {"workerGroupSpecs": [{"replicas": 2, "maxReplicas": 4, "template": {"spec": {"containers": [
        {"resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}, {"replicas": 3, "template": {"spec": {
            "containers": [{"resources": {"limits": {"cpu": "8"}}}]}}}]}
    assert manifests.raycluster_gpus(job) == 8
    launcher = {"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "g5.xlarge"}, "max_workers": 0},
        "gpu": {"max_workers": 3, "node_config": {"InstanceType": "g5.2xlarge"}},
        "cpu": {"max_workers": 5, "node_config": {"InstanceType": "m6i.2xlarge"}}}}
    assert manifests.launcher_gpus(launcher) == 3
