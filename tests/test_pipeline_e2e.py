"""End to end: ``dvc repro`` of every stage on a tiny params profile, in a temporary copy.

This is the path users take (``make run``), so CI guards it as a whole, not only its parts.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Every stage at the smallest size that still exercises it.
TINY = {
    "synthesize.synthetic_fashion.train_identities": 4,
    "synthesize.synthetic_fashion.test_identities": 2,
    "synthesize.synthetic_fashion.views_per_identity": 3,
    "synthesize.synthetic_market.train_identities": 3,
    "synthesize.synthetic_market.test_identities": 2,
    "synthesize.synthetic_market.views_per_identity": 2,
    "synthesize.synthetic_portrait.train_identities": 3,
    "synthesize.synthetic_portrait.test_identities": 2,
    "synthesize.synthetic_portrait.views_per_identity": 2,
    "synthesize.synthetic_portrait.supersample": 1,
    "preprocess.shard_size": 8,
    # Training runs in-process here (tests/test_train_ray.py guards the 2-worker Ray path).
    "train.workers": 0,
    "train.batch_size": 2,
    "train.total_images": 8,
    "train.checkpoint_every_images": 4,
    "train.log_every_images": 4,
    "train.grid_every_images": 8,
    # The default's three phases, one step each for the first two (its overrides ask for 150 / 120).
    "optim.flow_warmup_steps": 1,
    "optim.generator_warmup_steps": 1,
    "model.base_channels": 8,
    "model.max_channels": 32,
    "model.flow_channels": 8,
    "model.attn_dim": 8,
    "model.combine_channels": 8,
    "model.disc_channels": 8,
    "evaluate.grid_pairs": 2,
}


def _set(raw: dict, dotted: str, value) -> None:
    *path, key = dotted.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value


def _copy_tree(dst: Path) -> None:
    """Copy what git would ship (tracked + untracked, not ignored) into ``dst``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def make_repo_copy(work: Path, settings: dict, edit=None, **extra_env: str) -> dict:
    """The repository copied into ``work`` (a git repo of its own) with ``settings`` (dotted
    params.yaml keys) applied and ``edit(raw_params)`` after them; returns the env to run it in."""
    _copy_tree(work)
    raw = yaml.safe_load((work / "params.yaml").read_text())
    for dotted, value in settings.items():
        _set(raw, dotted, value)
    if edit is not None:
        edit(raw)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(work), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlruns.db", **extra_env}
    # As on a user's machine: Python (and numba) write their caches beside the code, inside the
    # stages' code deps; a second `dvc repro` must still find nothing to do (.dvcignore).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@attnflow", "-c", "user.name=ci", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=work, check=True, env=env)
    return env


@pytest.fixture(scope="module")
def repro_copy(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    return work, make_repo_copy(work, TINY)


def run_dvc(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), *args], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_dvc_repro_runs_every_stage_then_nothing(repro_copy):
    work, env = repro_copy
    stages = run_dvc(work, env, "stage", "list", "--name-only").stdout.split()
    assert "synthesize@synthetic_fashion" in stages and "preprocess@synthetic_fashion" in stages
    first = run_dvc(work, env, "repro")
    ran = stages_run(first.stdout)
    assert sorted(ran) == sorted(stages), first.stdout[-3000:]
    assert (work / "dvc.lock").is_file()

    second = run_dvc(work, env, "repro")
    assert stages_run(second.stdout) == [], second.stdout

    # `make run`'s closing summary reads where the aliases point from the registry itself.
    summary = subprocess.run([sys.executable, "-m", "pipelines.summary"], cwd=work, env=env, capture_output=True,
                             text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    assert "registered model attnflow-pose: @champion = v1 (ssim " in summary.stdout, summary.stdout

    # A synthesize param of one dataset reruns that dataset's stages only.
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["synthesize"]["synthetic_market"]["seed"] += 1
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    third = run_dvc(work, env, "repro")
    rerun = stages_run(third.stdout)
    assert "synthesize@synthetic_market" in rerun
    assert not any(name.endswith("synthetic_fashion") for name in rerun), rerun


def test_dvc_exp_run_set_param_takes_effect_and_experiments_compare(repro_copy):
    """`dvc exp run -S` on a key synthetic_fashion's overrides also set: the user's value trains (the
    resolved config says so), and metrics/plots of the two experiments diff with scores only."""
    import json

    from datasets.files import file_sha256

    work, env = repro_copy
    git = ["git", "-c", "user.email=ci@attnflow", "-c", "user.name=ci"]
    subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "baseline", "--allow-empty"], cwd=work, check=True, env=env)
    ckpt_dir = work / "runs/synthetic_fashion/checkpoints"
    base_ckpt = {str(p.relative_to(ckpt_dir)): file_sha256(p) for p in sorted(ckpt_dir.rglob("*")) if p.is_file()}
    base_lr = json.loads((work / "runs/synthetic_fashion/config.json").read_text())["optim"]["lr_g"]
    assert base_lr == 0.0005  # the dataset's recipe, params.yaml left at the default

    run = run_dvc(work, env, "exp", "run", "-S", "optim.lr_g=0.001", "--name", "lr-g-1e-3")
    assert "Running stage 'train'" in run.stdout and "Running stage 'evaluate'" in run.stdout
    config = json.loads((work / "runs/synthetic_fashion/config.json").read_text())
    assert config["optim"]["lr_g"] == 0.001, "a per-dataset override beat the value dvc exp run -S set"
    assert config["optim"]["lr_d"] == 0.00005  # the rest of the recipe still applies

    shown = run_dvc(work, env, "exp", "show", "--csv", "--no-pager").stdout
    assert "lr-g-1e-3" in shown and "model.ssim" in shown

    diff = json.loads(run_dvc(work, env, "metrics", "diff", "HEAD", "lr-g-1e-3", "--json").stdout)
    changed = {key for scores in diff.values() for key in scores}
    assert any(k.startswith("model.ssim") for k in changed), changed
    assert not any("seconds" in k or "protocol" in k or "path" in k for k in changed), changed

    # Both experiments' curves and per-pair scores in one HTML that needs no network (Vega inlined).
    template = work / ".dvc/tmp/plots-offline.html"
    subprocess.run([sys.executable, "infra/offline-plots-template.py", str(template)], cwd=work, env=env, check=True)
    out = work / "plots-diff"
    run_dvc(work, env, "plots", "diff", "HEAD", "lr-g-1e-3", "--html-template", str(template), "-o", str(out))
    html = (out / "index.html").read_text()
    assert "lr-g-1e-3" in html and "training losses" in html and "per-pair SSIM" in html
    assert "cdn.jsdelivr" not in html and "<script src=" not in html

    # Checkpoints are cached: the experiment's model and the baseline's come back from the cache.
    def checkpoint_hashes() -> dict[str, str]:
        ckpt = work / "runs/synthetic_fashion/checkpoints"
        return {str(p.relative_to(ckpt)): file_sha256(p) for p in sorted(ckpt.rglob("*")) if p.is_file()}

    trained = checkpoint_hashes()
    assert trained != base_ckpt
    subprocess.run(["git", "checkout", "-q", "--", "dvc.lock", "params.yaml"], cwd=work, check=True, env=env)
    run_dvc(work, env, "checkout", "--force", "train", "evaluate")
    assert checkpoint_hashes() == base_ckpt
    # The experiment's model again, from its commit (`dvc exp apply` does the same for every
    # dvc.yaml of the repository, and portrait/dvc.yaml never ran in this copy).
    run_dvc(work, env, "exp", "branch", "lr-g-1e-3", "exp-lr")
    subprocess.run(["git", "checkout", "-q", "exp-lr", "--", "dvc.lock", "params.yaml"], cwd=work, check=True, env=env)
    run_dvc(work, env, "checkout", "--force", "train", "evaluate")
    assert checkpoint_hashes() == trained
    assert json.loads((work / "metrics/synthetic_fashion.protocol.json").read_text())["generator"]["state_sha256"]
