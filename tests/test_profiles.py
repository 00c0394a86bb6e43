"""The params profiles users launch: each loads, validates and resolves without a GPU, spells
every key it runs with, and the GPU ones resolve to CUDA."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model.config import ModelConfig
from pipelines.config.params import leaves, load_config, read_layers, to_dict
from pipelines.training.placement import PlacementError, decide

ROOT = Path(__file__).resolve().parents[1]

# (profile name, the params files its stages read, in order)
PROFILES = [
    ("cpu-default", ["params.yaml"]),
    ("tiny", ["profiles/tiny.yaml"]),
    ("deepfashion-paper-gpu", ["profiles/deepfashion-paper-gpu.yaml"]),
    ("market-gpu", ["profiles/market-gpu.yaml"]),
    ("portrait-cpu", ["params.yaml", "portrait/params.yaml"]),
    ("ablation-cpu", ["params.yaml", "ablation/params.yaml"]),
]
GPU = {"deepfashion-paper-gpu", "market-gpu"}


def test_every_profile_file_is_listed_here():
    shipped = {p.stem for p in (ROOT / "profiles").glob("*.yaml")}
    assert shipped == {name for name, files in PROFILES if files[-1].startswith("profiles/")}


@pytest.mark.parametrize("name, files", PROFILES, ids=[p[0] for p in PROFILES])
def test_profile_resolves_without_a_gpu(name, files):
    paths = [ROOT / f for f in files]
    cfg = load_config(paths)
    assert cfg.profile == name
    dumped = subprocess.run(
        [sys.executable, "-m", "pipelines.train", *[x for f in files for x in ("--params", f)], "--dump-config"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert dumped.returncode == 0, dumped.stderr
    assert json.loads(dumped.stdout) == to_dict(cfg)
    assert cfg.train.dataset in cfg.datasets
    if name in GPU:
        assert cfg.train.device == "cuda" and cfg.train.gpus_per_worker == 1 and cfg.train.workers >= 1
        assert cfg.optim.amp == "bf16" and cfg.optim.compile == "always"
        # Without a GPU the run stops before it starts, saying why; with one it trains on it.
        with pytest.raises(PlacementError):
            decide(cfg.train.device, gpus_per_worker=1, threads_per_worker=1, on_cluster=False, local_cuda=False)
        assert decide(cfg.train.device, gpus_per_worker=1, threads_per_worker=1, on_cluster=True,
                      local_cuda=False).device == "cuda"
    else:
        assert cfg.train.device == "auto"


@pytest.mark.parametrize("name, files", PROFILES, ids=[p[0] for p in PROFILES])
def test_profile_spells_every_key_of_every_section_it_has(name, files):
    """No value a stage runs with comes from a schema default the params file does not show."""
    raw, _ = read_layers([ROOT / f for f in files])
    written = leaves(raw)
    resolved = leaves(to_dict(load_config([ROOT / f for f in files])))
    missing = [k for k in resolved if k.split(".")[0] in raw and k not in written]
    assert not missing, f"{name}: keys its stages run with but {files} do not spell: {missing}"


def test_layered_files_hold_only_whole_sections_they_replace():
    for rel in ("portrait/params.yaml", "ablation/params.yaml"):
        raw = yaml.safe_load((ROOT / rel).read_text())
        assert "datasets" not in raw  # the dataset entry is the one the shards were built from


def test_the_paper_profile_is_the_paper_model():
    cfg = load_config(ROOT / "profiles/deepfashion-paper-gpu.yaml")
    assert cfg.model == ModelConfig.paper()
    assert cfg.datasets[cfg.train.dataset].image_size == (256, 176)
    assert (cfg.optim.lr_g, cfg.optim.lr_d) == (1e-4, 1e-5)  # GFLA's
    assert cfg.loss.backbone == "vgg19"
    market = load_config(ROOT / "profiles/market-gpu.yaml")
    assert market.datasets[market.train.dataset].image_size == (128, 64)


def test_training_on_a_missing_vgg19_file_is_refused_before_anything_starts(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.train", "--params", "profiles/deepfashion-paper-gpu.yaml",
         "--set", "train.device=cpu", "--set", f"loss.vgg19_weights={tmp_path}/absent.pth", "--no-mlflow"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "loss.vgg19_weights" in done.stderr and "absent.pth" in done.stderr and "nothing is downloaded" in done.stderr

