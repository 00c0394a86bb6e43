"""Building blocks shared by the generator and the discriminators.

Generator blocks are pre-activation (norm -> LeakyReLU -> conv). Downsampling uses stride-2 3×3
convolutions, so a side of length n becomes ceil(n/2) and odd sizes (88 -> 44 -> 22 -> 11 -> 6)
need no padding of the input; upsampling always goes to an explicit size taken from the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

NEG_SLOPE = 0.2


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: instance, none")


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


# Pre-activation conv: norm -> LeakyReLU -> conv3x3.
class NormActConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1):
        super().__init__(make_norm(norm, cin), nn.LeakyReLU(NEG_SLOPE), conv3x3(cin, cout, stride))


# Residual block with two pre-activation convs and a 1×1 shortcut when the width changes.
class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(NormActConv(cin, cout, norm), NormActConv(cout, cout, norm))
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.body(x)


# Stride-2 pre-activation conv that halves the resolution (ceil) and changes the width.
class Down(NormActConv):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(cin, cout, norm, stride=2)


# Bilinear upsampling to an explicit size followed by a pre-activation conv.
class Up(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.conv = NormActConv(cin, cout, norm)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


# Warping block: adds source textures (already aligned to the target) to the skeleton features.
class WarpBlock(nn.Module):
    def __init__(self, channels: int, norm: str, extra: int = 0):
        super().__init__()  # extra: channels the warped textures carry beyond ``channels`` (the image)
        self.fuse = nn.Sequential(
            NormActConv(2 * channels + extra, channels, norm), NormActConv(channels, channels, norm)
        )

    def forward(self, x: Tensor, textures: Tensor) -> Tensor:
        return x + self.fuse(torch.cat([x, textures], dim=1))  # [B,C,h,w]


# Pyramid encoder: stride-2 stem then (res blocks, down) per scale; returns features by stride.
class PyramidEncoder(nn.Module):
    def __init__(self, cin: int, widths: dict[int, int], blocks: int, norm: str):
        super().__init__()
        self.strides = sorted(widths)  # 2, 4, ..., deepest
        if self.strides[0] != 2:
            raise ValueError(f"encoder widths must start at stride 2, got {self.strides}")
        self.stem = conv3x3(cin, widths[2], stride=2)
        self.stages = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, s in enumerate(self.strides):
            self.stages.append(nn.Sequential(*[ResBlock(widths[s], widths[s], norm) for _ in range(blocks)]))
            if i + 1 < len(self.strides):
                self.downs.append(Down(widths[s], widths[self.strides[i + 1]], norm))

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        feats: dict[int, Tensor] = {}
        x = self.stem(x)
        for i, s in enumerate(self.strides):
            x = self.stages[i](x)
            feats[s] = x  # [B,C_s,ceil(H/s),ceil(W/s)]
            if i < len(self.downs):
                x = self.downs[i](x)
        return feats


# Discriminator residual block: spectral-norm convs, LeakyReLU, 2× average-pool downsampling.
class DiscBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = spectral_norm(conv3x3(cin, cout))
        self.conv2 = spectral_norm(conv3x3(cout, cout))
        self.shortcut = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, NEG_SLOPE)), NEG_SLOPE))
        h = F.avg_pool2d(h, 2, ceil_mode=True)
        return h + self.shortcut(F.avg_pool2d(x, 2, ceil_mode=True))  # 1×1 conv commutes with pooling
