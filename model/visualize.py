"""Image grids for inspection: one row per sample, returned as a numpy uint8 array (the caller saves it).

Columns, left to right (``COLUMNS``): source, target pose, attention-warp image, flow-warp image,
combination map (heat: bright = attention chosen), output, target. A column the variant lacks is
mid-grey. Warped images and maps are shown at the finest scale where they exist, upsampled
(nearest, so their true resolution stays visible).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.generator import GeneratorOutput

COLUMNS: tuple[str, ...] = (
    "source",
    "target_pose",
    "attn_warp",
    "flow_warp",
    "combination",
    "output",
    "target",
)


def pose_to_rgb(pose: Tensor) -> Tensor:
    """Heatmaps [B,P,H,W] in [0,1] -> colour image [B,3,H,W] in [0,1], one hue per channel."""
    p = pose.shape[1]
    hue = torch.arange(p, dtype=torch.float32, device=pose.device) / max(p, 1)
    # HSV(h, 1, 1) -> RGB, vectorised over channels
    k = (torch.tensor([5.0, 3.0, 1.0], device=pose.device)[:, None] + hue[None] * 6) % 6  # [3,P]
    colours = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)  # [3,P]
    weights = pose.float().clamp(0, 1)
    rgb = torch.einsum("cp,bphw->bchw", colours, weights)
    return rgb.clamp(0, 1)


def heat(m: Tensor) -> Tensor:
    """Map [B,1,H,W] in [0,1] -> RGB [B,3,H,W]: dark blue (0, flow) through red to yellow (1, attention)."""
    m = m.float().clamp(0, 1)
    return torch.cat(
        [(2 * m).clamp(0, 1), (2 * m - 1).clamp(0, 1), (1 - 2 * m).clamp(0, 1) * 0.6 + 0.1], dim=1
    )


def _finest(maps: dict[int, Tensor]) -> Tensor | None:
    return maps[min(maps)] if maps else None


def _resize(x: Tensor | None, size: tuple[int, int], b: int) -> Tensor:
    if x is None:
        return torch.full((b, 3, *size), 0.5)
    return F.interpolate(x.detach().float().cpu(), size=size, mode="nearest")


def make_grid(
    batch: dict[str, Tensor], output: GeneratorOutput, max_rows: int = 8, border: int = 2
) -> np.ndarray:
    """uint8 [rows·(H+border), 7·(W+border), 3] grid; see ``COLUMNS`` for the column order."""
    for key in ("source_image", "target_pose", "target_image"):
        if key not in batch:
            raise ValueError(f"make_grid needs batch[{key!r}] (has {sorted(batch)})")
    src = batch["source_image"].detach().float().cpu()
    b, _, h, w = src.shape
    n = min(b, max_rows)
    to01 = lambda x: (x.detach().float().cpu() + 1) / 2
    cm = _finest(output.combination_maps)
    panels = [
        to01(src),
        pose_to_rgb(batch["target_pose"].detach().float().cpu()),
        _resize(None if not output.attn_warped_image else to01(_finest(output.attn_warped_image)), (h, w), b),
        _resize(None if not output.flow_warped_image else to01(_finest(output.flow_warped_image)), (h, w), b),
        _resize(None if cm is None else heat(cm), (h, w), b),
        to01(output.image),
        to01(batch["target_image"]),
    ]
    grid = torch.ones(n, len(panels), 3, h + border, w + border)  # white separators
    for j, panel in enumerate(panels):
        grid[:, j, :, :h, :w] = panel[:n].clamp(0, 1)
    grid = grid.permute(0, 3, 1, 4, 2).reshape(n * (h + border), len(panels) * (w + border), 3)
    return (grid.numpy() * 255 + 0.5).astype(np.uint8)
