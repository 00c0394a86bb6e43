"""Registry: round trip through a temporary SQLite store, and the champion promotion rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.export import PackedGenerator
from model.generator import build_generator
from pipelines.tracking import registry

TINY = dict(base_channels=4, max_channels=8, attn_dim=8, flow_channels=4, combine_channels=4,
            encoder_blocks=0, bottleneck_blocks=1, decoder_blocks=0, flow_depth=8)
SIZE = (32, 24)


def exported_generator(seed: int) -> PackedGenerator:
    torch.manual_seed(seed)
    cfg = ModelConfig(**TINY)
    return PackedGenerator(build_generator(cfg), cfg.pose_channels, SIZE)


def example_input(exported: PackedGenerator) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, exported.in_channels, *SIZE)).astype(np.float32)
    x[:, 3:] = (x[:, 3:] + 1) / 2  # heatmaps live in [0, 1]
    return x


def eval_doc(ssim: float, protocol: str = "p" * 64) -> dict:
    return {"model": {"ssim": ssim, "fd_effnet_lite0": 10.0}, "protocol_sha256": protocol}


@pytest.mark.parametrize("metric,lower", [("ssim", False), ("psnr", False), ("masked_ssim", False),
                                          ("fd_effnet_lite0", True), ("fid", True), ("lpips", True),
                                          ("masked_lpd_effnet_lite0", True), ("landmark_nme", True)])
def test_metric_direction(metric: str, lower: bool) -> None:
    assert registry.lower_is_better(metric) is lower


def test_unknown_metric_direction_is_an_error() -> None:
    with pytest.raises(ValueError, match="lower is better"):
        registry.lower_is_better("accuracy")


def _champ(value: float, metric: str = "ssim", protocol: str = "A", version: str = "1") -> SimpleNamespace:
    return SimpleNamespace(version=version, tags={registry.TAG_PRIMARY_METRIC: metric,
                                                  registry.TAG_PRIMARY_VALUE: repr(value),
                                                  registry.TAG_PROTOCOL: protocol})


def test_promotion_rule_never_promotes_a_worse_or_equal_candidate() -> None:
    assert registry.decide_promotion("ssim", 0.5, "A", None).promote
    assert registry.decide_promotion("ssim", 0.6, "A", _champ(0.5)).promote
    assert not registry.decide_promotion("ssim", 0.4, "A", _champ(0.5)).promote
    assert not registry.decide_promotion("ssim", 0.5, "A", _champ(0.5)).promote  # a tie keeps the champion
    assert registry.decide_promotion("fd_effnet_lite0", 3.0, "A", _champ(4.0, "fd_effnet_lite0")).promote
    assert not registry.decide_promotion("fd_effnet_lite0", 5.0, "A", _champ(4.0, "fd_effnet_lite0")).promote
    assert not registry.decide_promotion("ssim", float("nan"), "A", None).promote


def test_promotion_across_protocols_rescores_the_champion_or_keeps_it() -> None:
    champ = _champ(0.9, protocol="OLD")
    kept = registry.decide_promotion("ssim", 0.6, "NEW", champ)
    assert not kept.promote and "not comparable" in kept.reason
    asked = []
    rescored = registry.decide_promotion("ssim", 0.6, "NEW", champ,
                                         rescore=lambda uri: asked.append(uri) or 0.55, model_name="m")
    assert rescored.promote and asked == ["models:/m/1"]
    assert not registry.decide_promotion("ssim", 0.6, "NEW", champ, rescore=lambda uri: 0.7).promote


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in the temporary folder
    mlflow.set_tracking_uri(uri)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_registry_round_trip_and_promotion(store: Path) -> None:
    import mlflow

    name = "attnflow-pose"
    gens = [exported_generator(s) for s in (1, 2, 3)]
    example = example_input(gens[0])
    art = store / "grid.png"
    art.write_bytes(b"\x89PNG fake")
    r1 = registry.register_generator(gens[0], example, model_name=name, metrics_doc=eval_doc(0.5),
                                     primary_metric="ssim", artifacts=[art], tags={"dataset": "tiny"})
    r2 = registry.register_generator(gens[1], example, model_name=name, metrics_doc=eval_doc(0.4), primary_metric="ssim")
    client = mlflow.MlflowClient()
    assert (r1.promoted, r2.promoted) == (True, False)
    assert str(client.get_model_version_by_alias(name, "champion").version) == r1.version
    assert str(client.get_model_version_by_alias(name, "candidate").version) == r2.version
    r3 = registry.register_generator(gens[2], example, model_name=name, metrics_doc=eval_doc(0.6), primary_metric="ssim")
    assert r3.promoted and str(client.get_model_version_by_alias(name, "champion").version) == r3.version
    v1 = client.get_model_version(name, r1.version)
    assert v1.tags["dataset"] == "tiny" and v1.tags[registry.TAG_PROTOCOL] == "p" * 64

    # A fresh process, outside the repository and with no PYTHONPATH, loads the champion by alias
    # and reproduces the registration-time output; the signature rejects a wrong-shaped input.
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, mlflow, mlflow.pytorch, mlflow.pyfunc, torch
        assert not any(p.endswith('/work/main') for p in sys.path)
        uri = "models:/{name}@champion"
        local = mlflow.artifacts.download_artifacts(uri)
        x = np.load(local + "/extra_files/reference_input.npy")
        ref = np.load(local + "/extra_files/reference_output.npy")
        net = mlflow.pytorch.load_model(uri)
        out = net(torch.from_numpy(x)).numpy()
        pf = mlflow.pyfunc.load_model(uri)
        out2 = pf.predict(x)
        try:
            pf.predict(x[:, :, :16])
            rejected = False
        except Exception as exc:
            rejected = "shape" in str(exc).lower()
        print(json.dumps({{"err": float(np.abs(out - ref).max()), "err2": float(np.abs(out2 - ref).max()),
                           "rejected": rejected}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=store, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["err"] <= 1e-5 and result["err2"] <= 1e-5
    assert result["rejected"]
