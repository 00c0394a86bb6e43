"""The generator as a one-tensor-in, one-tensor-out module, the form model registries serve.

MLflow's PyTorch flavour (and most serving stacks) feed a model one array.  The three generator
inputs are therefore packed along channels: ``[source_image (3) | source_pose (P) | target_pose
(P)]``, images in [-1, 1] and heatmaps in [0, 1], all ``[B, 3 + 2P, H, W]``; the output is the
generated image ``[B, 3, H, W]`` in [-1, 1].  :func:`pack_inputs` builds that tensor.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def pack_inputs(source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> Tensor:
    """[B,3,H,W], [B,P,H,W], [B,P,H,W] -> [B, 3 + 2P, H, W] in that order."""
    if source_pose.shape != target_pose.shape:
        raise ValueError(
            f"source_pose {tuple(source_pose.shape)} and target_pose {tuple(target_pose.shape)} differ"
        )
    return torch.cat([source_image, source_pose, target_pose], dim=1)


class PackedGenerator(nn.Module):
    """A frozen generator taking the packed input tensor and returning only the image."""

    def __init__(
        self,
        generator: nn.Module,
        pose_channels: int,
        image_size: tuple[int, int],
        heatmap_sigma: float = 3.0,
    ) -> None:
        super().__init__()
        self.generator = copy.deepcopy(generator).float().cpu().eval().requires_grad_(False)
        self.pose_channels = int(pose_channels)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        # How the pose inputs were rendered in training, so inference renders them the same way.
        self.heatmap_sigma = float(heatmap_sigma)

    @property
    def in_channels(self) -> int:
        return 3 + 2 * self.pose_channels

    def forward(self, packed: Tensor) -> Tensor:
        expected = (self.in_channels, *self.image_size)
        if packed.dim() != 4 or tuple(packed.shape[1:]) != expected:
            raise ValueError(
                f"expected packed input [B, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"(source image, source pose, target pose), got {tuple(packed.shape)}"
            )
        p = self.pose_channels
        packed = packed.float()
        with torch.no_grad():
            out = self.generator(packed[:, :3], packed[:, 3 : 3 + p], packed[:, 3 + p :])
        return out.image

    def train(self, mode: bool = True) -> PackedGenerator:
        return super().train(False)  # inference only: instance norm and the like stay in eval mode
