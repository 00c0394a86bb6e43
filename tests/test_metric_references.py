"""The Fréchet and kernel distances against a reference implementation (torchmetrics, a dev
dependency that needs no torchvision) on the same features: the whole statistics path the
evaluation runs (streamed mean and covariance, the Fréchet formula; the subset MMD), not a
re-derivation of our own formulas. SSIM against scikit-image is tests/test_eval_metrics.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchmetrics.image.fid as tm_fid
import torchmetrics.image.kid as tm_kid
from torch import nn

from model.metrics import FeatureStats, frechet_distance
from pipelines.evaluation.statistics import kernel_distance



class Projection(nn.Module):
    """A fixed feature network: uint8 images -> D features (pooled, then a seeded linear map), so
    both implementations see exactly the same feature rows."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3 * 8 * 8, dim, generator=g, dtype=torch.float64), requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(images.to(torch.float64) / 255.0, 8).flatten(1)
        return torch.tanh(x @ self.weight) + 0.05 * torch.sin(7 * x[:, :1] * torch.arange(1, self.weight.shape[1] + 1))


def _images(n: int, seed: int, shift: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 200, (n, 3, 32, 24), generator=g)
    return (base + shift).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_torchmetrics_fid(seed):
    net = Projection(16, seed)
    real, fake = _images(60, seed), _images(50, seed + 100, shift=30)
    ref = tm_fid.FrechetInceptionDistance(feature=net, normalize=False)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    expected = float(ref.compute())

    stats = {}
    for name, imgs in (("real", real), ("fake", fake)):
        s = FeatureStats()
        for chunk in imgs.split(8):  # streamed in batches, as the evaluation does
            s.update(net(chunk))
        stats[name] = s.mean_cov()
    ours = frechet_distance(*stats["fake"], *stats["real"])
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert ours > 0.01  # the two sets differ: not a comparison of zeros


@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_distance_matches_torchmetrics_kid_on_the_whole_sets(seed):
    """One subset holding every row: the unbiased MMD² is then the same number whatever order
    each implementation draws the rows in."""
    net = Projection(12, seed)
    real, fake = _images(40, seed), _images(40, seed + 50, shift=20)
    ref = tm_kid.KernelInceptionDistance(feature=net, subsets=1, subset_size=40, normalize=False)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    expected, _ = ref.compute()
    with torch.no_grad():
        ours = kernel_distance(net(fake).numpy(), net(real).numpy(), subsets=1, subset_size=40, seed=seed)
    assert ours.subset_size == 40
    assert ours.mean == pytest.approx(float(expected), rel=1e-6, abs=1e-12)
    assert abs(ours.mean) > 1e-4


def test_kernel_distance_subsets_agree_with_torchmetrics_in_distribution():
    """Random subsets: the two implementations draw different rows, so their means agree to
    within the subsets' spread, not to the digit."""
    net = Projection(12, 7)
    real, fake = _images(120, 7), _images(120, 70, shift=20)
    ref = tm_kid.KernelInceptionDistance(feature=net, subsets=200, subset_size=30, normalize=False)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    torch.manual_seed(0)
    mean_ref, std_ref = (float(v) for v in ref.compute())
    with torch.no_grad():
        ours = kernel_distance(net(fake).numpy(), net(real).numpy(), subsets=200, subset_size=30, seed=0)
    assert abs(ours.mean - mean_ref) < 3 * max(ours.std, std_ref) / np.sqrt(200) * np.sqrt(2) + 1e-9
