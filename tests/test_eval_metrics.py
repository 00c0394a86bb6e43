"""model.metrics against the field's reference implementations (scikit-image, float64 scipy)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from model import metrics


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    # The field's call (PATN/GFLA/NTED evaluation scripts), on HWC uint8 images.
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1,
    )


def _random_pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # A correlated second image so SSIM lands mid-range rather than near 0.
    noise = rng.normal(0, 40, (h, w, 3))
    b = np.clip(a.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return a, b


def _nchw(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("size", [(128, 64), (37, 23), (11, 11)])
def test_ssim_equals_scikit_image(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    pairs = [_random_pair(rng, *size) for _ in range(3)]
    ours = metrics.ssim(_nchw([p[0] for p in pairs]), _nchw([p[1] for p in pairs]))
    ref = [_skimage_ssim(a, b) for a, b in pairs]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-9)
    assert 0.05 < min(ref) and max(ref) < 0.95  # the test exercises the formula, not its limits


def test_ssim_on_smooth_images_and_identity() -> None:
    # Smooth images stress the mean terms differently from white noise.
    y, x = np.mgrid[0:64, 0:48]
    a = np.stack([(x * 4) % 256, (y * 3) % 256, (x + y) % 256], -1).astype(np.uint8)
    b = np.roll(a, 2, axis=1)
    ours = metrics.ssim(_nchw([a, a]), _nchw([b, a]))
    assert ours[0].item() == pytest.approx(_skimage_ssim(a, b), abs=1e-9)
    assert ours[1].item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_rejects_float_and_mismatched_inputs() -> None:
    a = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        metrics.ssim(a.float(), a.float())
    with pytest.raises(ValueError, match="one shape"):
        metrics.ssim(a, a[:, :, :15])
    with pytest.raises(ValueError, match="smaller than"):
        metrics.ssim(a[:, :, :8, :8], a[:, :, :8, :8])


def test_psnr_equals_scikit_image() -> None:
    rng = np.random.default_rng(1)
    a, b = _random_pair(rng, 40, 30)
    ours = metrics.psnr(_nchw([a]), _nchw([b]))[0].item()
    assert ours == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)


def test_to_uint8_matches_png_rounding() -> None:
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 6)
    assert metrics.to_uint8(x).flatten().tolist() == [0, 0, 128, 191, 255, 255]


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    # pytorch-fid's calculate_frechet_distance, float64, with its complex-part handling.
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,n", [(8, 200), (64, 500), (32, 20)])
def test_frechet_distance_equals_float64_scipy(dim: int, n: int) -> None:
    rng = np.random.default_rng(dim)
    xa = rng.normal(size=(n, dim))
    xb = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 0.3
    mu1, s1 = xa.mean(0), np.cov(xa, rowvar=False)
    mu2, s2 = xb.mean(0), np.cov(xb, rowvar=False)
    ours = metrics.frechet_distance(mu1, s1, mu2, s2)
    ref = _scipy_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-8, abs=1e-8)
    # Rank-deficient covariances (n < dim) leave round-off of order 1e-8 of the trace (scipy's
    # sqrtm leaves the same).
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-7 * np.trace(s1))


def test_feature_stats_stream_equals_numpy_cov() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(101, 12)) * 3 + 7
    stats = metrics.FeatureStats()
    for chunk in np.array_split(x, 7):
        stats.update(torch.from_numpy(chunk).float())
    mu, cov = stats.mean_cov()
    xf = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, xf.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(xf, rowvar=False), rtol=1e-9, atol=1e-9)


def test_body_mask_covers_limbs_and_nothing_far_away() -> None:
    kp = np.full((18, 2), -1.0)
    kp[1] = (32, 20)  # neck (x, y)
    kp[2], kp[5] = (22, 22), (42, 22)  # shoulders
    kp[8], kp[11] = (26, 70), (38, 70)  # hips
    mask = metrics.body_mask(kp, (128, 64))
    assert mask[45, 32]  # torso centre, inside the neck/hip/shoulder polygons
    assert mask[20, 32] and mask[70, 26]
    assert not mask[110, 5] and not mask[5, 60]
    assert not metrics.body_mask(np.full((18, 2), -1.0), (128, 64)).any()


def test_perceptual_distance_is_zero_for_equal_and_grows_with_change() -> None:
    rng = torch.Generator().manual_seed(0)
    f = [torch.randn(2, 8, 6, 4, generator=rng), torch.randn(2, 16, 3, 2, generator=rng)]
    g = [t + 0.3 * torch.randn(t.shape, generator=rng) for t in f]
    h = [t + 1.0 * torch.randn(t.shape, generator=rng) for t in f]
    assert torch.allclose(metrics.perceptual_distance(f, f), torch.zeros(2, dtype=torch.float64))
    assert (metrics.perceptual_distance(f, g) < metrics.perceptual_distance(f, h)).all()


def test_inception_adapter_rejects_a_file_that_is_not_the_fid_network(tmp_path) -> None:
    class NotInception(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            return x.float().mean(dim=(2, 3))  # [B, 3], not [B, 2048]

    path = tmp_path / "fake-inception.pt"
    torch.jit.script(NotInception()).save(str(path))
    with pytest.raises(ValueError, match="not the FID Inception"):
        metrics.InceptionFID(path)
