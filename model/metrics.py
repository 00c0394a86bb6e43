"""Image-quality metrics of the pose-transfer field, in torch/numpy only.

* SSIM with the settings every pose-transfer paper since PATN uses (scikit-image's
  ``structural_similarity`` with ``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255`` on uint8 images, channels averaged),
  re-implemented as a batched float64 convolution; ``tests/test_eval_metrics.py`` checks it
  equals scikit-image to 1e-9.
* PSNR on uint8 images (data range 255).
* The Market-1501 body mask from the target keypoints (PATN's ``produce_ma_mask``), for masked
  SSIM and masked perceptual distance.
* The Fréchet distance between two Gaussians, and streaming feature statistics for it.
* A perceptual distance between multi-layer feature maps (LPIPS without its learned layer
  weights), and adapters for the real FID Inception and LPIPS VGG16 TorchScript files.

Which name each score is reported under (``fid`` only with the real FID network, otherwise
``fd_<backbone>``, and so on) is decided by the evaluation that picks the networks, not here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

# scikit-image's defaults for gaussian_weights=True: sigma 1.5, truncate 3.5 -> 11-tap window.
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


# ---------------------------------------------------------------------------- pixels


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images [B, C, H, W] -> uint8, exactly as they are written to PNG."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    # Same taps as scipy.ndimage.gaussian_filter (radius = int(truncate * sigma + 0.5)).
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"expected two [B, C, H, W] batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (data range 255), got {a.dtype} and {b.dtype}")


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM [B] (float64) of uint8 batches [B, C, H, W], channels averaged.

    scikit-image filters with reflect padding and then averages only the pixels at least one
    window radius from the border; those pixels never see the padding, so a "valid"
    convolution over the unpadded image gives the same numbers.
    """
    _check_pair(a, b)
    win = _gaussian_window()
    r = (win.numel() - 1) // 2
    bsz, ch, h, w = a.shape
    if h < win.numel() or w < win.numel():
        raise ValueError(f"images of {h}x{w} are smaller than the {win.numel()}-pixel SSIM window")
    x = a.to(torch.float64).reshape(bsz * ch, 1, h, w)
    y = b.to(torch.float64).reshape(bsz * ch, 1, h, w)
    kh, kw = win.view(1, 1, -1, 1), win.view(1, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh), kw)

    # Five filtered moments in one conv pass: [5 * B*C, 1, H-2r, W-2r].
    moments = blur(torch.cat([x, y, x * x, y * y, x * y], dim=0)).chunk(5, dim=0)
    ux, uy, uxx, uyy, uxy = moments
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population covariance
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    assert s.shape[-2:] == (h - 2 * r, w - 2 * r)
    return s.mean(dim=(1, 2, 3)).view(bsz, ch).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR [B] in dB of uint8 batches; identical images give +inf."""
    _check_pair(a, b)
    mse = (a.to(torch.float64) - b.to(torch.float64)).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(DATA_RANGE**2 / mse)


# ---------------------------------------------------------------------------- body mask

# PATN's mask limbs (1-based OpenPose-18 indices in its code), including the torso diagonals
# and the head triangle, so the mask covers the body and not only the skeleton lines.
_MASK_LIMBS = (
    np.array(
        [
            [2, 3],
            [2, 6],
            [3, 4],
            [4, 5],
            [6, 7],
            [7, 8],
            [2, 9],
            [9, 10],
            [10, 11],
            [2, 12],
            [12, 13],
            [13, 14],
            [2, 1],
            [1, 15],
            [15, 17],
            [1, 16],
            [16, 18],
            [2, 17],
            [2, 18],
            [9, 12],
            [12, 6],
            [9, 3],
            [17, 18],
        ]
    )
    - 1
)


def _close(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation then erosion with a size×size square (skimage dilation/erosion)."""
    r = size // 2

    def shift_reduce(m: np.ndarray, fill: bool, op) -> np.ndarray:
        padded = np.pad(m, r, constant_values=fill)
        out = np.full_like(m, fill)
        h, w = m.shape
        for dy in range(size):
            for dx in range(size):
                out = op(out, padded[dy : dy + h, dx : dx + w])
        return out

    dilated = shift_reduce(mask, False, np.logical_or)
    return shift_reduce(dilated, True, np.logical_and)


def body_mask(keypoints: np.ndarray, size: tuple[int, int], radius: float = 4.0) -> np.ndarray:
    """Bool mask [H, W] of the body from OpenPose-18 keypoints [18, 2] in (x, y), -1 missing.

    PATN's Market-1501 mask: a quadrilateral of half-width ``radius`` along each limb, a disc
    at each joint, then a 5×5 closing.  A pixel belongs to a shape when its centre is inside.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] != 2:
        raise ValueError(f"expected keypoints [K, 2], got {kp.shape}")
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mask = np.zeros((h, w), dtype=bool)
    present = (kp[:, 0] != -1) & (kp[:, 1] != -1)
    for f, t in _MASK_LIMBS:
        if f >= len(kp) or t >= len(kp) or not (present[f] and present[t]):
            continue
        d = kp[t] - kp[f]
        length = float(np.hypot(*d))
        if length == 0:
            continue
        u = d / length
        # Coordinates of every pixel centre along and across the limb.
        along = (xx - kp[f, 0]) * u[0] + (yy - kp[f, 1]) * u[1]
        across = -(xx - kp[f, 0]) * u[1] + (yy - kp[f, 1]) * u[0]
        mask |= (along >= 0) & (along <= length) & (np.abs(across) <= radius)
    for x, y in kp[present]:
        mask |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return _close(mask, 5)


def apply_mask(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Zero uint8 images [B, C, H, W] outside bool masks [B, H, W]."""
    return images * masks[:, None].to(images.dtype)


# ---------------------------------------------------------------------------- Fréchet distance


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2)``.  The trace of the matrix square root
    is taken as the sum of sqrt eigenvalues of the symmetric PSD matrix S1^1/2 S2 S1^1/2, which has
    the same spectrum as S1 S2 but, unlike ``scipy.linalg.sqrtm(S1 @ S2)``, never goes complex.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    evals, evecs = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    middle = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


class FeatureStats:
    """Streaming mean and covariance (ddof=1, as pytorch-fid's ``np.cov``) of feature rows."""

    def __init__(self) -> None:
        self.n = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = np.asarray(
            features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float64
        )
        if x.ndim != 2:
            raise ValueError(f"expected features [N, D], got {x.shape}")
        if self._sum is None or self._outer is None:
            self._sum, self._outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        self.n += len(x)
        self._sum += x.sum(0)
        self._outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2 or self._sum is None or self._outer is None:
            raise ValueError(f"need at least 2 feature rows for a covariance, have {self.n}")
        mu = self._sum / self.n
        cov = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


# ---------------------------------------------------------------------------- feature networks


class FeatureExtractor(Protocol):
    """What the Fréchet and perceptual metrics need from a network."""

    name: str  # backbone name in metric names: fd_<name>, lpd_<name>
    weights_sha256: str  # sha256 of the weights file, recorded in the protocol
    is_reference: bool  # True only for the field's FID Inception / LPIPS VGG files

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> [B, D] features for the Fréchet distance."""

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 [B, 3, H, W] -> feature maps [B, C_l, H_l, W_l] for the perceptual distance."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def perceptual_distance(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image distance [B] between two lists of feature maps (LPIPS without learned weights).

    Each layer is unit-normalised over channels, the squared difference summed over channels
    and averaged over positions, and the layers summed: LPIPS's formula with all its linear
    weights set to one.
    """
    if len(feats_a) != len(feats_b) or not feats_a:
        raise ValueError("expected two equally long, non-empty lists of feature maps")
    total = _unit_distance(feats_a[0], feats_b[0])
    for fa, fb in zip(feats_a[1:], feats_b[1:]):
        total = total + _unit_distance(fa, fb)
    return total


def _unit_distance(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    # One layer of perceptual_distance, [B].
    fa = fa.double() / (fa.double().norm(dim=1, keepdim=True) + 1e-10)
    fb = fb.double() / (fb.double().norm(dim=1, keepdim=True) + 1e-10)
    return (fa - fb).pow(2).sum(dim=1).flatten(1).mean(dim=1)


class ModuleFeatures:
    """A :class:`FeatureExtractor` over any module returning a list of feature maps.

    ``module(x)`` takes float images in [-1, 1] [B, 3, H, W] (the generator's range; the module
    applies its own input normalisation) and returns feature maps, coarsest last.  The pooled
    features are the global average of the coarsest map.
    """

    is_reference = False

    def __init__(self, module: torch.nn.Module, name: str, weights_sha256: str) -> None:
        self.module = module.eval()
        self.name = name
        self.weights_sha256 = weights_sha256

    @torch.no_grad()
    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.module(images.float() / 127.5 - 1))

    @torch.no_grad()
    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)[-1].mean(dim=(2, 3))


class InceptionFID:
    """The FID Inception-v3 as the TorchScript file the StyleGAN2-ADA/StyleGAN3/EDM metrics use
    (``inception-2015-12-05.pt``): uint8 [B, 3, H, W] in, 2048 pool features out; it resizes to
    299×299 itself, the same way TensorFlow's original FID code does."""

    is_reference = True
    name = "inception"

    def __init__(self, path: str | Path) -> None:
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.weights_sha256 = sha256_file(path)
        probe = self.pooled(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
        if probe.shape != (1, 2048):
            raise ValueError(
                f"{path}: not the FID Inception network (features {tuple(probe.shape)}, expected 2048)"
            )

    @torch.no_grad()
    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images, return_features=True)

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError("the FID Inception gives pooled features only")


class LpipsVGG:
    """LPIPS-VGG16 as the TorchScript file of the StyleGAN2-ADA metrics (``vgg16.pt``), which
    carries the learned LPIPS weights: ``net(x, resize_images=False, return_lpips=True)`` gives
    features whose squared L2 distance is LPIPS."""

    is_reference = True
    name = "vgg16"

    def __init__(self, path: str | Path) -> None:
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.weights_sha256 = sha256_file(path)

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.net(a, resize_images=False, return_lpips=True)
        fb = self.net(b, resize_images=False, return_lpips=True)
        return (fa.double() - fb.double()).square().sum(dim=1)


def lpd_between(net: FeatureExtractor | LpipsVGG, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image perceptual distance [B] of uint8 batches with whichever network is configured."""
    if isinstance(net, LpipsVGG):
        return net.distance(a, b)
    return perceptual_distance(net.layers(a), net.layers(b))


def finite_mean(values: torch.Tensor | np.ndarray) -> float:
    """Mean of per-image scores, with +inf PSNR (identical images) capped at 100 dB so one exact
    copy does not make the average infinite."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isinf(v), 100.0, v)
    return float(v.mean()) if v.size else math.nan
