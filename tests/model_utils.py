"""Tiny configs and synthetic batches shared by the model tests (channels 4–8, 32×22 inputs)."""
from __future__ import annotations

import torch

from model.config import ModelConfig

H, W, P = 32, 22, 18


def tiny_config(variant: str = "full", **overrides) -> ModelConfig:
    values = dict(variant=variant, pose_channels=P, base_channels=8, max_channels=16, flow_channels=4, attn_dim=8,
                  combine_channels=4, disc_channels=4, disc_blocks=3, face_crop_size=16, face_disc_channels=4,
                  face_disc_blocks=2)
    values.update(overrides)
    return ModelConfig(**values)


def gaussian_pose(points: torch.Tensor, h: int = H, w: int = W, sigma: float = 1.5) -> torch.Tensor:
    """Heatmaps [B,P,h,w] from keypoints [B,P,2] (x, y pixels)."""
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w) + 0.5
    d2 = (xs - points[..., 0, None, None]) ** 2 + (ys - points[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2))


def synthetic_batch(b: int = 2, seed: int = 0, h: int = H, w: int = W, p: int = P) -> dict[str, torch.Tensor]:
    """Random but structured pairs: smooth images, Gaussian pose heatmaps, a face box in the top part."""
    g = torch.Generator().manual_seed(seed)
    def smooth_image():
        low = torch.rand(b, 3, 4, 3, generator=g) * 2 - 1
        return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    src_pts = torch.rand(b, p, 2, generator=g) * torch.tensor([w, h])
    tgt_pts = (src_pts + torch.randn(b, p, 2, generator=g) * 2).clamp(min=0)
    return {
        "source_image": smooth_image(), "target_image": smooth_image(),
        "source_pose": gaussian_pose(src_pts, h, w), "target_pose": gaussian_pose(tgt_pts, h, w),
        "target_face_box": torch.tensor([[w * 0.3, h * 0.05, w * 0.7, h * 0.35]]).repeat(b, 1),
        "target_face_valid": torch.tensor([i % 2 == 0 for i in range(b)]),
    }
