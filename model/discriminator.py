"""Discriminators: a residual spectral-norm patch discriminator for images and one for face crops."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from model.blocks import NEG_SLOPE, DiscBlock, conv3x3
from model.config import ModelConfig
from model.warp import crop_boxes


# Residual spectral-norm discriminator returning a map of patch logits [B,1,h,w].
class ResDiscriminator(nn.Module):
    def __init__(self, channels: int, blocks: int, max_channels: int, in_channels: int = 3):
        super().__init__()
        widths = [min(channels * 2**i, max_channels) for i in range(blocks + 1)]
        self.stem = spectral_norm(conv3x3(in_channels, widths[0]))
        self.blocks = nn.Sequential(*[DiscBlock(widths[i], widths[i + 1]) for i in range(blocks)])
        self.head = spectral_norm(conv3x3(widths[-1], 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"discriminator input must be [B,C,H,W], got {tuple(x.shape)}")
        h = self.blocks(self.stem(x))
        return self.head(F.leaky_relu(h, NEG_SLOPE))  # [B,1,h,w]


# Face discriminator: crops each image's face box (roi-align style) and scores the crop.
class FaceDiscriminator(nn.Module):
    def __init__(self, crop_size: int, channels: int, blocks: int, max_channels: int):
        super().__init__()
        self.crop_size = crop_size
        self.net = ResDiscriminator(channels, blocks, max_channels)

    def crop(self, images: Tensor, boxes: Tensor) -> Tensor:
        """Face crops [B,3,s,s] of ``images`` [B,3,H,W] with ``boxes`` [B,4] = (x0,y0,x1,y1) pixels."""
        return crop_boxes(images, boxes, (self.crop_size, self.crop_size))

    def forward(self, faces: Tensor) -> Tensor:
        """Patch logits [B,1,h,w] of face crops [B,3,s,s] (see :meth:`crop`)."""
        return self.net(faces)


def build_discriminators(cfg: ModelConfig) -> tuple[ResDiscriminator, FaceDiscriminator | None]:
    """The image discriminator and, for variants with the face term, the face discriminator."""
    d = ResDiscriminator(cfg.disc_channels, cfg.disc_blocks, cfg.max_channels)
    d_face = (
        FaceDiscriminator(cfg.face_crop_size, cfg.face_disc_channels, cfg.face_disc_blocks, cfg.max_channels)
        if cfg.uses_face
        else None
    )
    return d, d_face
