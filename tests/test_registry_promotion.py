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
from pipelines.evaluation.statistics import by_identity
from pipelines.registry import promotion, publish
from pipelines.registry.publish import RegistrationRequest
from pipelines.runs.records import EvaluationRecord
from pipelines.serving.contract import encode_png
from tests.record_fixtures import evaluation_record

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(base_channels=4, max_channels=8, attn_dim=8, flow_channels=4, combine_channels=4,
            encoder_blocks=0, bottleneck_blocks=1, decoder_blocks=0, flow_depth=8)
SIZE = (32, 24)
KEYPOINTS = [[4 + (i % 4) * 5, 3 + i * 1.5] for i in range(18)]  # OpenPose-18 points inside the 32×24 frame


def exported_generator(seed: int) -> PackedGenerator:
    torch.manual_seed(seed)
    cfg = ModelConfig(**TINY)
    return PackedGenerator(build_generator(cfg), cfg.pose_channels, SIZE)


def example_input(exported: PackedGenerator) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, exported.in_channels, *SIZE)).astype(np.float32)
    x[:, 3:] = (x[:, 3:] + 1) / 2  # heatmaps live in [0, 1]
    return x


def eval_doc(ssim: float, protocol: str = "p" * 64, **fields) -> EvaluationRecord:
    return evaluation_record({"ssim": ssim, "fd_effnet_lite0": 10.0}, protocol, **fields)


def _champ(value: float, metric: str = "ssim", protocol: str = "A", version: str = "1") -> SimpleNamespace:
    return SimpleNamespace(version=version, tags={promotion.TAG_PRIMARY_METRIC: metric,
                                                  promotion.TAG_PRIMARY_VALUE: repr(value),
                                                  promotion.TAG_PROTOCOL: protocol})


def test_an_unknown_primary_metric_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="lower is better"):
        promotion.decide_promotion("accuracy", 0.9, "A", _champ(0.8, metric="accuracy", protocol="A"),
                                   policy=promotion.ANY_GAIN)


def test_promotion_rule_never_promotes_a_worse_or_equal_candidate() -> None:
    def decide(*args, **kw):
        return promotion.decide_promotion(*args, policy="any_gain", **kw)

    assert decide("ssim", 0.5, "A", None).promote
    assert decide("ssim", 0.6, "A", _champ(0.5)).promote
    assert not decide("ssim", 0.4, "A", _champ(0.5)).promote
    assert not decide("ssim", 0.5, "A", _champ(0.5)).promote  # a tie keeps the champion
    assert decide("fd_effnet_lite0", 3.0, "A", _champ(4.0, "fd_effnet_lite0")).promote
    assert not decide("fd_effnet_lite0", 5.0, "A", _champ(4.0, "fd_effnet_lite0")).promote
    assert not decide("ssim", float("nan"), "A", None).promote
    for policy in promotion.POLICIES:  # no policy promotes a worse candidate
        assert not promotion.decide_promotion("ssim", 0.4, "A", _champ(0.5), policy=policy).promote


def test_promotion_across_protocols_rescores_the_champion_or_keeps_it() -> None:
    champ = _champ(0.9, protocol="OLD")
    kept = promotion.decide_promotion("ssim", 0.6, "NEW", champ, policy="any_gain")
    assert not kept.promote and "not comparable" in kept.reason
    asked = []
    rescored = promotion.decide_promotion("ssim", 0.6, "NEW", champ, policy="any_gain",
                                         rescore=lambda uri: asked.append(uri) or 0.55, model_name="m")
    assert rescored.promote and asked == ["models:/m/1"]
    assert not promotion.decide_promotion("ssim", 0.6, "NEW", champ, rescore=lambda uri: 0.7,
                                          policy="any_gain").promote


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
    request = {"source_image": encode_png(np.full((*SIZE, 3), 120, np.uint8)),
               "target_keypoints": json.dumps(KEYPOINTS), "source_keypoints": json.dumps(KEYPOINTS)}
    # The registry's mechanics under the plain rule (any gain); the default policy's evidence is
    # tested below.
    r1 = publish.register_generator(gens[0], example, RegistrationRequest(
        name, eval_doc(0.5), "ssim", artifacts=[art], tags={"dataset": "tiny"}, task="pose", request_example=request,
        promotion_policy="any_gain"))
    r2 = publish.register_generator(gens[1], example, RegistrationRequest(name, eval_doc(0.4), "ssim",
                                                                          promotion_policy="any_gain"))
    client = mlflow.MlflowClient()
    assert (r1.promoted, r2.promoted) == (True, False)
    assert str(client.get_model_version_by_alias(name, "champion").version) == r1.version
    assert str(client.get_model_version_by_alias(name, "candidate").version) == r2.version
    r3 = publish.register_generator(gens[2], example, RegistrationRequest(name, eval_doc(0.6), "ssim",
                                                                          promotion_policy="any_gain"))
    assert r3.promoted and str(client.get_model_version_by_alias(name, "champion").version) == r3.version
    v1 = client.get_model_version(name, r1.version)
    assert v1.tags["dataset"] == "tiny" and v1.tags[promotion.TAG_PROTOCOL] == "p" * 64
    # Each version's description is its model card; the registered model's names the champion.
    v2 = client.get_model_version(name, r2.version)
    assert v2.description.startswith(f"# {name} v{r2.version}: pose transfer")
    assert "champion stays v1" in v2.description and "`" + "p" * 64 + "`" in v2.description
    assert "[grid.png](#/experiments/" in v1.description
    assert f"**champion** is v{r3.version}, ssim 0.6" in client.get_registered_model(name).description
    # r1 carries the request as its input example (MLflow checked it through the pyfunc at log time).
    v1_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{r1.version}"))
    stored = json.loads((v1_dir / "serving_input_example.json").read_text())
    assert stored["dataframe_split"]["columns"] == list(request)

    # A fresh process, outside the repository and with no PYTHONPATH, loads the champion by alias:
    # as the PyTorch generator it reproduces the registration-time output and rejects a wrong-shaped
    # input; as pyfunc (its shipped code) it answers a column request with a PNG of the model's size.
    script = textwrap.dedent(f"""
        import base64, io, json, sys, numpy as np, pandas as pd, mlflow, mlflow.pytorch, mlflow.pyfunc, torch
        from PIL import Image
        assert {str(ROOT)!r} not in sys.path
        uri = "models:/{name}@champion"
        local = mlflow.artifacts.download_artifacts(uri)
        x = np.load(local + "/extra_files/reference_input.npy")
        ref = np.load(local + "/extra_files/reference_output.npy")
        net = mlflow.pytorch.load_model(uri)
        out = net(torch.from_numpy(x)).numpy()
        try:
            net(torch.from_numpy(x[:, :, :16]))
            rejected = False
        except ValueError as exc:
            rejected = "expected packed input" in str(exc)
        pf = mlflow.pyfunc.load_model(uri)
        answer = pf.predict(pd.DataFrame([json.load(open("request.json"))]))
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["image"][0]))))
        import pipelines
        print(json.dumps({{"err": float(np.abs(out - ref).max()), "rejected": rejected,
                           "net": type(net).__name__, "served": list(served.shape),
                           "code": "/code/pipelines/" in pipelines.__file__}}))
    """)
    (store / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=store, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["err"] <= 1e-5 and result["rejected"] and result["net"] == "PackedGenerator"
    assert result["served"] == [*SIZE, 3] and result["code"]


def test_promotion_says_whether_the_gain_was_beyond_noise_and_the_policy_decides() -> None:
    rng = np.random.default_rng(0)
    champ_pairs = list(rng.uniform(0.5, 0.9, 144))
    real = [v + 0.01 for v in champ_pairs]
    jitter = rng.normal(0, 0.03, 144)
    noisy = [v + d for v, d in zip(champ_pairs, jitter - jitter.mean() + 0.002)]  # a gain of 0.002, in noise
    champ = _champ(float(np.mean(champ_pairs)))

    def decide(pairs, policy):
        return promotion.decide_promotion("ssim", float(np.mean(pairs)), "A", champ, policy=policy,
                                          candidate_pairs=pairs, champion_pairs=lambda mv: champ_pairs,
                                          versus_baselines=BEATEN)

    d = decide(real, "beyond_noise")
    assert d.promote and d.beyond_noise and "beyond noise" in d.reason and "95% CI" in d.reason
    gain = decide(noisy, "any_gain")
    assert gain.promote and gain.beyond_noise is False and "within noise" in gain.reason
    kept = decide(noisy, "beyond_noise")
    assert not kept.promote and "not promoted under beyond_noise, champion stays v1" in kept.reason
    # Without the champion's per-pair scores the noise cannot be assessed: beyond_noise never promotes.
    blind = promotion.decide_promotion("ssim", 0.99, "A", champ, policy="beyond_noise", candidate_pairs=real,
                                       versus_baselines=BEATEN)
    assert not blind.promote and "noise not assessed" in blind.reason
    with pytest.raises(ValueError, match="promotion_policy"):
        decide(real, "always")


def test_a_rescored_champion_is_compared_pair_by_pair() -> None:
    champ = _champ(0.5, protocol="OLD")
    pairs = [0.5, 0.6, 0.7, 0.8] * 10
    d = promotion.decide_promotion("ssim", float(np.mean(pairs)) + 0.05, "NEW", champ,
                                   rescore=lambda uri: (float(np.mean(pairs)), pairs), model_name="m",
                                   candidate_pairs=[p + 0.05 for p in pairs], versus_baselines=BEATEN,
                                   resampling=by_identity([f"id{i % 4}" for i in range(40)], 40))
    assert d.promote and d.comparison.pairs == 40 and "re-scored" in d.reason
    assert d.comparison.method == "identity bootstrap" and d.comparison.units == 4


def _versus(copy: tuple[float, float, float], mean: tuple[float, float, float], metric: str = "ssim") -> dict:
    def one(gain, low, high):
        verdict = "better" if low > 0 else "worse" if high < 0 else "noise"
        return {metric: {"gain": gain, "ci95_low": low, "ci95_high": high, "verdict": verdict,
                         "beyond_noise": verdict != "noise", "method": "identity bootstrap", "identities": 12}}
    return {"copy_source": one(*copy), "mean_train_image": one(*mean)}


BEATEN = _versus((0.14, 0.12, 0.16), (0.16, 0.15, 0.17))


def test_the_default_policy_needs_the_champion_and_both_baselines_beaten_beyond_noise() -> None:
    assert promotion.DEFAULT_POLICY == "beyond_baselines_and_champion"
    from pipelines.config.stages import RegisterConfig
    from pipelines.evaluation.scoring import BASELINES

    assert RegisterConfig().promotion_policy == promotion.DEFAULT_POLICY and promotion.BASELINES == BASELINES
    rng = np.random.default_rng(0)
    ids = [f"id{i // 12}" for i in range(144)]
    units = by_identity(ids, 144)
    champ_pairs = rng.uniform(0.5, 0.9, 144)
    real = champ_pairs + 0.01 + rng.normal(0, 0.002, 144)
    champ = _champ(float(champ_pairs.mean()))

    def decide(pairs, versus, champion=champ):
        return promotion.decide_promotion("ssim", float(np.mean(pairs)), "A", champion, candidate_pairs=list(pairs),
                                          champion_pairs=lambda mv: list(champ_pairs), versus_baselines=versus,
                                          resampling=units)

    ok = decide(real, BEATEN)
    assert ok.promote and ok.comparison.beyond_noise and ok.policy == "beyond_baselines_and_champion"
    assert "identity bootstrap over 12 identities (144 pairs)" in ok.reason
    # Beyond noise over the champion, but not over mean_train_image: refused, and the reason says so.
    weak = decide(real, _versus((0.14, 0.12, 0.16), (0.004, -0.003, 0.011)))
    assert not weak.promote and "not beyond noise over mean_train_image" in weak.reason
    assert "over mean_train_image: ssim gain +0.004, 95% CI [-0.003, +0.011], within noise" in weak.reason
    record = weak.record()
    assert record["versus_baselines"]["mean_train_image"]["verdict"] == "noise"
    assert record["versus_champion"]["method"] == "identity bootstrap" and record["versus_champion"]["identities"] == 12
    # The baselines beaten, the champion only within noise: refused too.
    jitter = rng.normal(0, 0.03, 144)
    noisy = champ_pairs + jitter - jitter.mean() + 0.002
    assert not decide(noisy, BEATEN).promote
    # No verdicts in the record (an old record, or a set-level metric): no evidence, no promotion.
    assert not decide(real, None).promote and "no ssim verdict in the evaluation record" in decide(real, None).reason
    # The reason is one line.
    assert "\n" not in weak.reason


def test_a_first_version_needs_both_baselines_beaten_and_the_refusal_says_why() -> None:
    first = promotion.decide_promotion("ssim", 0.55, "A", None, versus_baselines=BEATEN)
    assert first.promote and first.reason.startswith("promoted under beyond_baselines_and_champion: no champion yet")
    refused = promotion.decide_promotion("ssim", 0.55, "A", None,
                                         versus_baselines=_versus((0.02, -0.01, 0.05), (0.03, 0.01, 0.05)))
    assert not refused.promote
    assert refused.reason.startswith("not promoted under beyond_baselines_and_champion (a first version must beat "
                                     "both baselines beyond noise; not: copy_source): no champion yet")
    # any_gain and beyond_noise keep promoting a first version without the baselines.
    assert promotion.decide_promotion("ssim", 0.55, "A", None, policy="any_gain").promote
    assert promotion.decide_promotion("ssim", 0.55, "A", None, policy="beyond_noise").promote


def test_a_refused_version_stays_candidate_and_one_line_is_logged(store: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import mlflow

    name = "attnflow-pose"
    gen = exported_generator(1)
    doc = eval_doc(0.55, model_vs_baselines=_versus((0.14, 0.12, 0.16), (0.004, -0.003, 0.011)))
    with caplog.at_level(logging.INFO, logger="pipelines.registry.publish"):
        reg = publish.register_generator(gen, example_input(gen), RegistrationRequest(name, doc, "ssim"))
    client = mlflow.MlflowClient()
    assert not reg.promoted and reg.champion_version == ""
    assert str(client.get_model_version_by_alias(name, "candidate").version) == reg.version
    assert promotion.current_champion(client, name) is None
    lines = [r.getMessage() for r in caplog.records if "not promoted" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    print(lines[0])
    assert lines[0].startswith(f"{name} v{reg.version} registered as candidate only (champion: none yet): "
                               "not promoted under beyond_baselines_and_champion")
    assert reg.promotion["policy"] == "beyond_baselines_and_champion"
    assert reg.promotion["versus_baselines"]["mean_train_image"]["ci95_low"] == -0.003
    v = client.get_model_version(name, reg.version)
    assert v.tags["promotion_policy"] == "beyond_baselines_and_champion"
    assert v.tags["promotion_vs_mean_train_image"] == "0.004 [-0.003, 0.011] noise"
    assert "Rule `beyond_baselines_and_champion`" in v.description
    assert "- over mean_train_image: `ssim` gain +0.004, 95% CI [-0.003, +0.011], noise" in v.description
    assert "No **champion** yet." in client.get_registered_model(name).description
