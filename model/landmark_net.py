"""A small landmark regressor: face image -> 68 (x, y), the instrument of the landmark-following metric.

Portrait evaluation asks whether a generated face *follows* its driving landmarks.  On synthetic
faces the target's landmarks are exact, so the question becomes a measurement: find the landmarks
in the generated image and compare them with the target's.  This network does the finding.  It is
trained on the synthetic training images only (pipelines/evaluation/landmark_regressor.py) and reported with its
own error on the held-out real test images, which bounds what the metric can resolve.

Plain convolutions with stride 2 down to a 4×4 grid, then a linear head on the flattened grid
(coordinates need the spatial layout that global pooling would throw away).  Outputs are
normalised coordinates in [-1, 1] (pixel centres: x_px = (x + 1) · W / 2 - 0.5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NUM_POINTS = 68


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class LandmarkRegressor(nn.Module):
    """RGB in [-1, 1], [B, 3, H, W] -> normalised landmarks [B, 68, 2] (x, y in [-1, 1])."""

    def __init__(self, width: int = 16, points: int = NUM_POINTS) -> None:
        super().__init__()
        w = width
        self.points = points
        self.features = nn.Sequential(
            _block(3, w, 1),
            _block(w, w, 2),  # 1/2
            _block(w, 2 * w, 1),
            _block(2 * w, 2 * w, 2),  # 1/4
            _block(2 * w, 4 * w, 1),
            _block(4 * w, 4 * w, 2),  # 1/8
            _block(4 * w, 8 * w, 2),  # 1/16
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * w * 16, 256), nn.ReLU(inplace=True), nn.Linear(256, 2 * points)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).view(-1, self.points, 2)


def to_pixels(normalised: Tensor, size: tuple[int, int]) -> Tensor:
    """[..., 2] in [-1, 1] -> pixel-centre (x, y) of an (H, W) frame."""
    h, w = size
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=normalised.dtype, device=normalised.device)
    return (normalised + 1) * scale - 0.5


def to_normalised(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = size
    scale = torch.tensor([w / 2.0, h / 2.0], dtype=pixels.dtype, device=pixels.device)
    return (pixels + 0.5) / scale - 1
