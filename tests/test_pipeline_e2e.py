"""End to end: ``dvc repro`` of every stage on a tiny params profile, in a temporary copy.

This is the path users take (``make run``), so CI guards it as a whole, not only its parts.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

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


def make_repo_copy(work: Path, settings: dict, edit=None, profile: str | None = None,
                   files: dict[str, dict] | None = None, **extra_env: str) -> dict:
    """The repository copied into ``work`` (a git repo of its own), with ``profiles/<profile>.yaml``
    copied over params.yaml as the README says to switch profile, then ``settings`` (dotted
    params.yaml keys), ``edit(raw_params)`` and ``files`` (other params files: relative path ->
    dotted keys) applied; returns the env to run it in."""
    _copy_tree(work)
    if profile is not None:
        shutil.copyfile(work / "profiles" / f"{profile}.yaml", work / "params.yaml")
    for rel, values in {"params.yaml": settings, **(files or {})}.items():
        if not values and not (edit is not None and rel == "params.yaml"):
            continue
        raw = yaml.safe_load((work / rel).read_text())
        for dotted, value in values.items():
            _set(raw, dotted, value)
        if edit is not None and rel == "params.yaml":
            edit(raw)
        (work / rel).write_text(yaml.safe_dump(raw, sort_keys=False))
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
    return work, make_repo_copy(work, {}, profile="tiny")


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
    # 8 training images give no evidence of beating both baselines beyond noise: under the default
    # promotion policy v1 stays candidate, and the summary says there is no champion and why.
    line = next((ln for ln in summary.stdout.splitlines() if "registered model attnflow-pose:" in ln), "")
    assert "registered model attnflow-pose: no @champion yet, @candidate = v1 (ssim " in line, summary.stdout
    assert "not promoted: not promoted under beyond_baselines_and_champion" in line, line
    reg = json.loads((work / "runs/synthetic_fashion/registered-synthetic_fashion.json").read_text())
    assert not reg["promoted"] and reg["promotion"]["policy"] == "beyond_baselines_and_champion"

    # A synthesize param of one dataset reruns that dataset's stages only.
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["synthesize"]["synthetic_market"]["seed"] += 1
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    third = run_dvc(work, env, "repro")
    rerun = stages_run(third.stdout)
    assert "synthesize@synthetic_market" in rerun
    assert not any(name.endswith("synthetic_fashion") for name in rerun), rerun


def _cmd_settings(argv: list[str]) -> dict:
    """Values a stage's command line sets (DVC records the command, so these are tracked too)."""
    flags = {"--dataset": "train.dataset", "--run-name": "train.run_name", "--workers": "train.workers"}
    out = {}
    for flag, value in zip(argv, argv[1:]):
        if flag == "--set":
            key, text = value.split("=", 1)
            out[key] = yaml.safe_load(text)
        elif flag in flags and argv[argv.index("-m") + 1] == "pipelines.train":
            out[flags[flag]] = yaml.safe_load(value)
    return out


# What each stage's code reads: every leaf under these must be a param DVC records for the stage.
STAGE_READS = {
    "train": ("profile", "datasets.{dataset}", "model", "loss", "optim", "train"),
    "evaluate": ("datasets.{dataset}", "evaluate", "loss.backbone", "loss.vgg19_weights", "train.storage_path"),
    "register": ("register", "evaluate.bootstrap_resamples", "evaluate.seed", "train.storage_path",
                 "train.mlflow_experiment"),
}


def test_what_dvc_records_is_what_runs_and_what_mlflow_logs(repro_copy):
    """On the tiny profile: every param dvc.lock records for a stage equals the resolved config the
    stage's own command runs with (`--dump-config`), so does `dvc params diff --all`, every key the
    stage reads is recorded, and the MLflow training run logged exactly that config."""
    import json
    import shlex

    import mlflow

    from pipelines.config.params import leaves

    work, env = repro_copy
    from ruamel.yaml import YAML  # DVC's own reader: YAML 1.2, where 5e-05 is a number

    lock = YAML(typ="safe").load((work / "dvc.lock").read_text())["stages"]
    dvc_params = json.loads(run_dvc(work, env, "params", "diff", "--all", "--json").stdout)
    dataset = yaml.safe_load((work / "params.yaml").read_text())["train"]["dataset"]
    for stage, reads in STAGE_READS.items():
        argv = shlex.split(lock[stage]["cmd"])
        dumped = subprocess.run([sys.executable, *argv[1:], "--dump-config"], cwd=work, env=env,
                                capture_output=True, text=True, timeout=300)
        assert dumped.returncode == 0, dumped.stderr
        resolved = leaves(json.loads(dumped.stdout))
        by_cmd = _cmd_settings(argv)
        recorded = {key: value for rel, values in lock[stage]["params"].items()
                    for key, value in leaves(values).items()}
        for key, value in recorded.items():
            want = by_cmd.get(key, value)
            assert resolved[key] == (list(want) if isinstance(want, tuple) else want), (stage, key, value)
            if key not in by_cmd:  # `dvc params diff` prints lists as text
                shown = dvc_params["params.yaml"][key]["new"]
                assert shown == value or (isinstance(value, list) and yaml.safe_load(shown) == value), (stage, key)
        needed = [k for k in resolved for r in reads if k == r.format(dataset=dataset)
                  or k.startswith(r.format(dataset=dataset) + ".")]
        missing = [k for k in needed if k not in recorded and k not in by_cmd]
        assert not missing, f"{stage} runs with {missing} but DVC does not record them"
        if stage == "train":
            trained = {k: resolved[k] for k in [*recorded, *by_cmd]}

    # The MLflow run logged the values DVC recorded for the training stage (and its whole config).
    summary = json.loads((work / f"runs/{dataset}/summary.json").read_text())
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    logged = client.get_run(summary["mlflow_run_id"]).data.params
    as_logged = lambda v: json.dumps(v) if isinstance(v, list) else str(v)  # noqa: E731 - MLflow params are text
    assert {k: logged.get(k) for k in trained} == {k: as_logged(v) for k, v in trained.items()}
    config = leaves(json.loads((work / f"runs/{dataset}/config.json").read_text()))
    assert logged == {k: as_logged(v) for k, v in config.items()}
    assert logged["profile"] == "tiny" and logged["optim.lr_g"] == "0.0005"


def test_dvc_exp_run_set_param_takes_effect_and_experiments_compare(repro_copy):
    """`dvc exp run -S` trains at the value asked for, whatever it is (here the built-in default,
    which a per-dataset recipe layer once silently replaced); `dvc exp show` names the profile;
    metrics/plots of the two experiments diff with scores only."""
    import json

    from datasets.files import file_sha256

    work, env = repro_copy
    git = ["git", "-c", "user.email=ci@attnflow", "-c", "user.name=ci"]
    subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "baseline", "--allow-empty"], cwd=work, check=True, env=env)
    ckpt_dir = work / "runs/synthetic_fashion/checkpoints"
    base_ckpt = {str(p.relative_to(ckpt_dir)): file_sha256(p) for p in sorted(ckpt_dir.rglob("*")) if p.is_file()}
    base_lr = json.loads((work / "runs/synthetic_fashion/config.json").read_text())["optim"]["lr_g"]
    assert base_lr == 0.0005  # params.yaml's value

    run = run_dvc(work, env, "exp", "run", "-S", "optim.lr_g=0.0001", "--name", "lr-g-1e-4")
    assert "Running stage 'train'" in run.stdout and "Running stage 'evaluate'" in run.stdout
    config = json.loads((work / "runs/synthetic_fashion/config.json").read_text())
    assert config["optim"]["lr_g"] == 0.0001, "the value dvc exp run -S set did not train"
    assert config["optim"]["lr_d"] == 0.00005

    shown = run_dvc(work, env, "exp", "show", "--csv", "--no-pager").stdout
    assert "lr-g-1e-4" in shown and "model.ssim" in shown
    header, *rows = list(csv.reader(shown.splitlines()))
    assert "params.yaml:profile" in header and "params.yaml:optim.lr_g" in header, header
    row = next(r for r in rows if "lr-g-1e-4" in r)
    assert row[header.index("params.yaml:profile")] == "tiny"
    assert float(row[header.index("params.yaml:optim.lr_g")]) == 0.0001

    diff = json.loads(run_dvc(work, env, "metrics", "diff", "HEAD", "lr-g-1e-4", "--json").stdout)
    changed = {key for scores in diff.values() for key in scores}
    assert any(k.startswith("model.ssim") for k in changed), changed
    assert not any("seconds" in k or "protocol" in k or "path" in k for k in changed), changed

    # Both experiments' curves and per-pair scores in one HTML that needs no network (Vega inlined).
    template = work / ".dvc/tmp/plots-offline.html"
    subprocess.run([sys.executable, "infra/offline-plots-template.py", str(template)], cwd=work, env=env, check=True)
    out = work / "plots-diff"
    run_dvc(work, env, "plots", "diff", "HEAD", "lr-g-1e-4", "--html-template", str(template), "-o", str(out))
    html = (out / "index.html").read_text()
    assert "lr-g-1e-4" in html and "training losses" in html and "per-pair SSIM" in html
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
    run_dvc(work, env, "exp", "branch", "lr-g-1e-4", "exp-lr")
    subprocess.run(["git", "checkout", "-q", "exp-lr", "--", "dvc.lock", "params.yaml"], cwd=work, check=True, env=env)
    run_dvc(work, env, "checkout", "--force", "train", "evaluate")
    assert checkpoint_hashes() == trained
    assert json.loads((work / "metrics/synthetic_fashion.protocol.json").read_text())["generator"]["state_sha256"]
