"""The evaluation does not grade its own homework: its network is not the loss network, and its
statistics say when a difference is real (KID, the Fréchet rule, bootstrap intervals, the field's SSIM)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.backbones import EffNetLite0Backbone
from model.config import LossConfig
from model.metrics import sha256_file
from pipelines.config.params import load_config
from pipelines.config.stages import EvaluateConfig
from pipelines.evaluation import statistics
from pipelines.evaluation.generators import EvaluationError
from pipelines.evaluation.networks import build_networks, effnet_lite_weights, loss_network
from pipelines.evaluation.scoring import field_ssim
from tests.test_pipeline_e2e import ROOT


def test_default_evaluation_network_is_not_the_loss_network() -> None:
    """Fails the moment params.yaml would score the generator with the network it was trained against."""
    cfg = load_config(ROOT / "params.yaml")
    nets = build_networks(cfg.evaluate, cfg.loss)
    trained_against = loss_network(cfg.loss)
    assert trained_against["weights_sha256"], "the default loss backbone is a learned network"
    for role in ("fd", "lpd"):
        desc = nets.description[role]
        assert desc["weights_sha256"] != trained_against["weights_sha256"], role
        assert "lossnet" not in desc["metric"]
    # Not merely another file: another network (the loss backbone's own weights hash differently).
    assert sha256_file(effnet_lite_weights("lite0")) == trained_against["weights_sha256"]
    assert nets.description["loss_network"] == trained_against


def test_scoring_with_the_loss_network_is_refused_unless_allowed_and_then_named_so() -> None:
    loss = LossConfig(backbone="effnet_lite0")
    same = EvaluateConfig(feature_backbone="effnet_lite0")
    with pytest.raises(EvaluationError, match="allow_loss_backbone") as err:
        build_networks(same, loss)
    assert "effnet_lite1" in str(err.value)  # says what to use instead
    nets = build_networks(dataclasses.replace(same, allow_loss_backbone=True), loss)
    assert (nets.names.fd, nets.names.lpd) == ("fd_lossnet_effnet_lite0", "lpd_lossnet_effnet_lite0")
    assert nets.description["fd"]["kid_metric"] == "kid_lossnet_effnet_lite0"
    # With another loss network, the same backbone is independent and keeps its plain name.
    free = build_networks(same, LossConfig(backbone="none"))
    assert free.names.fd == "fd_effnet_lite0"


def test_evaluation_network_features_are_not_the_loss_features() -> None:
    """Lite1's stride-16 features differ from the loss backbone's on the same image (not a re-labelling)."""
    cfg = load_config(ROOT / "params.yaml")
    nets = build_networks(cfg.evaluate, cfg.loss)
    torch.manual_seed(0)
    img = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    ours = nets.fd.layers(img)
    theirs = EffNetLite0Backbone()(img.float() / 127.5 - 1)
    assert [f.shape[1] for f in ours] == [16, 24, 40, 112]
    assert not torch.allclose(ours[-1], theirs["s16"], atol=1e-2)


def test_kid_is_unbiased_mmd_with_the_cubic_kernel() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.normal(0.5, 1, size=(40, 5))

    def k(a, b):
        return (a @ b.T / 5 + 1) ** 3

    m, n = len(x), len(y)
    expected = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1)) + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1))
                - 2 * k(x, y).mean())
    one = statistics.kernel_distance(x, y, subsets=1, subset_size=1000, seed=0)  # subset = all rows (permuted)
    assert one.mean == pytest.approx(expected, rel=1e-9) and one.subset_size == 40
    same = statistics.kernel_distance(x, rng.normal(size=(50, 5)), subsets=50, subset_size=30, seed=0)
    shifted = statistics.kernel_distance(x, y, subsets=50, subset_size=30, seed=0)
    assert abs(same.mean) < shifted.mean and shifted.std > 0
    assert statistics.kernel_distance(x, y, 50, 30, seed=0) == shifted  # seeded: same scores, same spread


def test_frechet_needs_more_distinct_images_than_dimensions() -> None:
    rng = np.random.default_rng(0)
    assert statistics.frechet_not_computed_reason(rng.normal(size=(113, 112))) is None
    assert "112 distinct images do not exceed the 112" in statistics.frechet_not_computed_reason(rng.normal(size=(112, 112)))
    repeated = np.repeat(rng.normal(size=(48, 112)), 3, axis=0)  # 144 rows, 48 images (a copied source)
    assert "48 distinct" in statistics.frechet_not_computed_reason(repeated)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_pairs() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.7, 0.05, 30), rng.normal(0.7, 0.05, 3000)
    a, b = statistics.bootstrap_mean_ci(small, statistics.by_pair(30), 2000, 0), statistics.bootstrap_mean_ci(large, statistics.by_pair(3000), 2000, 0)
    assert a.low < small.mean() < a.high and b.low < large.mean() < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    assert statistics.bootstrap_mean_ci(small, statistics.by_pair(30), 2000, 0) == a


def _clustered(rng: np.random.Generator, identities: int = 12, per: int = 12, spread: float = 0.08,
               noise: float = 0.01, mean: float = 0.7) -> tuple[np.ndarray, list[str]]:
    """Per-pair scores whose pairs within an identity are strongly correlated (a shared
    per-identity offset much larger than the pair noise), as views of one person are."""
    offsets = rng.normal(0, spread, identities)
    values = np.concatenate([mean + o + rng.normal(0, noise, per) for o in offsets])
    return values, [f"id{i:02d}" for i in range(identities) for _ in range(per)]


def test_identity_bootstrap_is_wider_than_the_pair_bootstrap_and_covers_the_true_mean() -> None:
    rng = np.random.default_rng(5)
    values, ids = _clustered(rng)
    by_id = statistics.by_identity(ids, len(values))
    assert (by_id.method, by_id.n_units, by_id.pairs, by_id.fallback) == ("identity bootstrap", 12, 144, None)
    ident = statistics.bootstrap_mean_ci(values, by_id, 2000, 0)
    pair = statistics.bootstrap_mean_ci(values, statistics.by_pair(len(values)), 2000, 0)
    # 12 independent identities, not 144 independent pairs: the interval is several times wider.
    assert ident.high - ident.low > 2.5 * (pair.high - pair.low)
    assert ident.low < values.mean() < ident.high
    # Coverage of the true mean (0.7) over repeated draws of identities: near 95% for the
    # identity bootstrap (a little under with 12 clusters), far under it for the pair bootstrap.
    hits = {"identity": 0, "pair": 0}
    trials = 200
    for t in range(trials):
        v, i = _clustered(np.random.default_rng(100 + t))
        a = statistics.bootstrap_mean_ci(v, statistics.by_identity(i, len(v)), 400, t)
        b = statistics.bootstrap_mean_ci(v, statistics.by_pair(len(v)), 400, t)
        hits["identity"] += a.low <= 0.7 <= a.high
        hits["pair"] += b.low <= 0.7 <= b.high
    assert hits["identity"] / trials >= 0.85 and hits["pair"] / trials <= 0.5, hits


def test_identity_bootstrap_is_deterministic_for_a_seed() -> None:
    values, ids = _clustered(np.random.default_rng(6))
    by_id = statistics.by_identity(ids, len(values))
    first = statistics.bootstrap_mean_ci(values, by_id, 2000, 7)
    assert statistics.bootstrap_mean_ci(values, statistics.by_identity(list(ids), len(values)), 2000, 7) == first
    assert statistics.bootstrap_mean_ci(values, by_id, 2000, 8) != first
    np.testing.assert_array_equal(statistics.bootstrap_means(values, by_id, 500, 3), statistics.bootstrap_means(values, by_id, 500, 3))
    # The identities' names do not matter, only which pairs share one.
    renamed = statistics.by_identity([f"x{name}" for name in ids], len(values))
    assert statistics.bootstrap_mean_ci(values, renamed, 2000, 7) == first


def test_without_identities_the_bootstrap_falls_back_to_pairs_and_says_why() -> None:
    none = statistics.by_identity(None, 10, "the test shards record no identity")
    assert none.method == "pair bootstrap" and none.n_units == 10
    assert none.record() == {"method": "pair bootstrap", "pairs": 10, "identities": None, "units": 10,
                             "fallback": "the test shards record no identity"}
    assert "2 of 4 test pairs have no identity" in statistics.by_identity(["a", "", "b", ""], 4).fallback
    assert "one identity" in statistics.by_identity(["a"] * 6, 6).fallback
    ok = statistics.by_identity(["a", "a", "b"], 3)
    assert ok.record() == {"method": "identity bootstrap", "pairs": 3, "identities": 2, "units": 2, "fallback": None}
    assert ok.subset(np.array([True, True, False])).n_units == 1


def test_paired_bootstrap_tells_a_real_gain_from_noise() -> None:
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0.3, 0.9, 144)  # shared by both generators: cancels in a paired test
    champion = difficulty + rng.normal(0, 0.01, 144)
    units = statistics.by_identity([f"id{i // 12}" for i in range(144)], 144)
    real = statistics.paired_bootstrap(champion + 0.01, champion, lower_is_better=False, resampling=units, resamples=2000,
                              seed=0)
    noise = statistics.paired_bootstrap(champion + rng.normal(0, 0.02, 144), champion, False, units, 2000, 0)
    assert real.beyond_noise and real.low > 0 and real.gain == pytest.approx(0.01)
    assert not noise.beyond_noise and noise.low < 0 < noise.high
    assert "identity bootstrap over 12 identities (144 pairs)" in real.describe("ssim")
    # A distance: lower is better, so the sign flips.
    assert statistics.paired_bootstrap(champion - 0.01, champion, True, units, 2000, 0).beyond_noise


def test_a_gain_carried_by_a_few_identities_is_beyond_noise_for_pairs_only() -> None:
    # The candidate is much better on 2 of 12 identities and equal elsewhere: 24 of 144 pairs
    # agree, which pairs taken alone count as strong evidence; 2 people out of 12 are not.
    rng = np.random.default_rng(4)
    champion = rng.uniform(0.5, 0.9, 144)
    candidate = champion + rng.normal(0, 0.002, 144)
    candidate[:24] += 0.05
    ids = [f"id{i // 12}" for i in range(144)]
    by_pairs = statistics.paired_bootstrap(candidate, champion, False, statistics.by_pair(144), 2000, 0)
    by_ids = statistics.paired_bootstrap(candidate, champion, False, statistics.by_identity(ids, 144), 2000, 0)
    assert by_pairs.beyond_noise and (by_ids.high - by_ids.low) > 1.5 * (by_pairs.high - by_pairs.low)
    assert by_ids.record()["identities"] == 12 and by_ids.record()["method"] == "identity bootstrap"


def test_field_ssim_uses_the_generated_images_range_as_the_published_scripts() -> None:
    from skimage.metrics import structural_similarity

    from model.metrics import ssim as ssim255

    rng = np.random.default_rng(3)
    target = rng.integers(0, 256, (2, 40, 32, 3)).astype(np.uint8)
    generated = np.clip(target.astype(int) // 2 + 40 + rng.integers(-20, 20, target.shape), 0, 255).astype(np.uint8)
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    got = field_ssim(t(generated), t(target))
    for i in range(2):
        expected = structural_similarity(generated[i], target[i], gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, channel_axis=2,
                                         data_range=int(generated[i].max()) - int(generated[i].min()))
        assert got[i] == pytest.approx(expected, abs=1e-12)
    # The fixed-range SSIM is another number on these low-contrast images: both are reported, by name.
    assert not np.allclose(got, ssim255(t(generated), t(target)).numpy(), atol=1e-3)


def _lpips_alex_files(tmp_path):
    from pipelines.evaluation.lpips_alex import _CHANNELS, _alexnet_features

    torch.manual_seed(0)
    alex = {f"features.{k}": v for k, v in _alexnet_features().state_dict().items()}
    lin = {f"lin{k}.model.1.weight": torch.rand(1, ch, 1, 1) for k, ch in enumerate(_CHANNELS)}
    torch.save(alex, tmp_path / "alexnet.pth")
    torch.save(lin, tmp_path / "alex.pth")
    return str(tmp_path / "alexnet.pth"), str(tmp_path / "alex.pth")


def test_lpips_alex_by_path_is_named_lpips_and_checks_its_files(tmp_path) -> None:
    alex, lin = _lpips_alex_files(tmp_path)
    ecfg = EvaluateConfig(lpips_alex_weights=alex, lpips_alex_lin_weights=lin)
    nets = build_networks(ecfg, LossConfig(backbone="effnet_lite0"))
    assert nets.names.lpd == "lpips" and nets.names.fd == "fd_effnet_lite1"  # only the perceptual one is LPIPS
    assert nets.description["lpd"]["reference_network"] and "net='alex'" in nets.description["lpd"]["features"]
    img = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    other = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    assert torch.allclose(nets.lpd.distance(img, img), torch.zeros(2, dtype=torch.float64))
    assert (nets.lpd.distance(img, other) > 0).all()
    # The VGG form has its own name.
    vgg = build_networks(dataclasses.replace(ecfg, lpips_net="vgg"), LossConfig(backbone="none"))
    assert vgg.names.lpd == "lpd_effnet_lite1"  # no vgg16.pt given: not LPIPS at all
    # A wrong file is named in the error.
    torch.save({"lin0.model.1.weight": torch.rand(1, 3, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(EvaluationError, match="lpips_alex_lin_weights.*lin0"):
        build_networks(dataclasses.replace(ecfg, lpips_alex_lin_weights=str(tmp_path / "bad.pth")), LossConfig())
    with pytest.raises(EvaluationError, match="lpips_alex_weights: no such file"):
        build_networks(dataclasses.replace(ecfg, lpips_alex_weights=str(tmp_path / "gone.pth")), LossConfig())
