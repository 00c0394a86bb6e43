"""Loss terms, each unweighted and per sample ([B]); the GAN step reduces and weights them in one place.

Feature-based terms take backbone feature dicts (see :mod:`model.backbones`) so one backbone pass
serves several terms. Everything is computed in float32, also under autocast.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from model.warp import flow_warp, resize_flow


def _per_sample_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)  # [B,...] -> [B]


def sum_terms(terms: Iterable[Tensor]) -> Tensor:
    """``sum(terms)`` (0 + t1 + t2 + ...) for one or more loss tensors; none is an error: the
    builtin's int 0 for none is no loss any caller can use."""
    total = sum(terms)
    if not isinstance(total, Tensor):
        raise TypeError("no loss terms to sum (the sum of none is the int 0, not a tensor)")
    return total


def l1_loss(fake: Tensor, real: Tensor) -> Tensor:
    """Mean absolute error per sample, [B]."""
    return _per_sample_mean((fake.float() - real.float()).abs())


def content_loss(fake: dict[str, Tensor], real: dict[str, Tensor], layers: tuple[str, ...]) -> Tensor:
    """Perceptual content: L1 between backbone features, summed over ``layers``, [B]."""
    return sum_terms(l1_loss(fake[k], real[k]) for k in layers)


def gram(x: Tensor) -> Tensor:
    """Gram matrix [B,C,C] normalised by C·H·W (GFLA's convention)."""
    _, c, h, w = x.shape
    f = x.float().flatten(2)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def style_loss(fake: dict[str, Tensor], real: dict[str, Tensor], layers: tuple[str, ...]) -> Tensor:
    """Style: L1 between Gram matrices, summed over ``layers``, [B]."""
    return sum_terms(l1_loss(gram(fake[k]), gram(real[k])) for k in layers)


def lsgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """LSGAN discriminator terms ``((D(real)-1)², D(fake)²)``, each [B]."""
    return _per_sample_mean((real_logits.float() - 1).square()), _per_sample_mean(
        fake_logits.float().square()
    )


def lsgan_g_loss(fake_logits: Tensor) -> Tensor:
    """LSGAN generator term ``(D(fake)-1)²``, [B]."""
    return _per_sample_mean((fake_logits.float() - 1).square())


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """Squared gradient norm of D's real logits w.r.t. the real images, [B] (graph kept for backward)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return grad.float().square().flatten(1).sum(dim=1)


def sampling_correctness_loss(
    source_feat: Tensor, target_feat: Tensor, flow: Tensor, eps: float = 1e-8
) -> Tensor:
    """GFLA's sampling correctness: the source features fetched by ``flow`` should be as similar to
    the target's as the most similar source position is, [B].

    source_feat, target_feat [B,C,h,w] from the same backbone layer; flow [B,2,h',w'] in pixels
    of its own grid (resized here). Zero when each target feature is fetched from its best match.
    """
    _, _, h, w = target_feat.shape
    src, tgt = source_feat.float(), target_feat.float()
    with torch.no_grad():
        s = F.normalize(src.flatten(2), dim=1)  # [B,C,M]
        t = F.normalize(tgt.flatten(2), dim=1)  # [B,C,N]
        best = torch.bmm(s.transpose(1, 2), t).amax(dim=1).clamp_min(eps)  # [B,N] max over source positions
    warped = flow_warp(src, resize_flow(flow.float(), (h, w)))  # [B,C,h,w]
    sampled = F.cosine_similarity(warped.flatten(2), tgt.flatten(2), dim=1, eps=eps)  # [B,N]
    return torch.exp(-sampled / best).mean(dim=1) - math.exp(-1.0)


@functools.lru_cache(maxsize=8)
def _affine_residual_kernel(k: int) -> Tensor:
    # Rows of R = I - A (AᵀA)⁻¹ Aᵀ with A = [x, y, 1] over a k×k window: R removes the best
    # affine fit, so R·window is the part of the flow that is not locally affine.
    r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    gy, gx = torch.meshgrid(r, r, indexing="ij")
    a = torch.stack([gx.flatten(), gy.flatten(), torch.ones(k * k, dtype=torch.float64)], dim=1)  # [k²,3]
    residual = torch.eye(k * k, dtype=torch.float64) - a @ torch.linalg.solve(a.T @ a, a.T)
    return residual.float().view(k * k, 1, k, k)


def flow_regularization_loss(flow: Tensor, kernel_sizes: tuple[int, ...] = (3, 5)) -> Tensor:
    """Local-affine regulariser (GFLA): mean squared residual of the best affine fit of the flow in
    every k×k window, summed over ``kernel_sizes``; zero for any affine flow, [B]."""
    b, _, h, w = flow.shape
    total = flow.new_zeros(b, dtype=torch.float32)
    for k in kernel_sizes:
        if h < k or w < k:
            continue  # the grid is smaller than the window
        weight = _affine_residual_kernel(k).to(flow.device)
        res = F.conv2d(flow.float().reshape(b * 2, 1, h, w), weight)  # [2B,k²,h-k+1,w-k+1]
        total = total + _per_sample_mean(res.reshape(b, -1).square())
    return total


def attention_reconstruction_loss(warped_image: Tensor, target_image: Tensor) -> Tensor:
    """L1 between the source image carried through the attention (at a low scale) and the target
    downsampled to that scale, [B]."""
    size = warped_image.shape[-2:]
    target = F.interpolate(
        target_image.float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return l1_loss(warped_image, target)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [B] over ``mask`` [B]; 0 (still differentiable) when the mask is empty."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def change_weighted_l1(fake: Tensor, real: Tensor, source: Tensor) -> Tensor:
    """Mean absolute error per pixel and channel, weighted by how much the pair changes each pixel
    (``|real - source|``, maximum over channels), per sample, then averaged over the samples that
    change at all: a scalar. A pair that changes a few pixels (an eye closing) weighs as much as one
    that changes them all."""
    weight = (real - source).abs().amax(1, keepdim=True).detach()
    total = weight.sum(dim=(1, 2, 3))
    per = (weight * (fake - real).abs()).sum(dim=(1, 2, 3)) / (total * fake.shape[1]).clamp_min(1e-6)
    return masked_mean(per, total > 1e-3)


def pose_weighted_l1(fake: Tensor, real: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
    """Mean absolute error per pixel and channel, weighted by where either pose map is drawn
    (the maximum over both maps' channels, resized to the image): a scalar."""
    weight = torch.maximum(source_pose.amax(1, keepdim=True), target_pose.amax(1, keepdim=True))
    if weight.shape[-2:] != fake.shape[-2:]:
        weight = F.interpolate(weight, size=fake.shape[-2:], mode="bilinear", align_corners=False)
    weight = weight.to(fake.dtype)
    return (weight * (fake - real).abs()).sum() / (weight.sum() * fake.shape[1]).clamp_min(1e-6)
