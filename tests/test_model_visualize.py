"""The inspection grid: one row per sample, seven columns, uint8 RGB."""
import numpy as np
import pytest
import torch

from model.generator import build_generator
from model.visualize import COLUMNS, heat, make_grid, pose_to_rgb
from tests.model_utils import H, W, synthetic_batch, tiny_config


@pytest.mark.parametrize("variant", ["full", "baseline", "flow"])
def test_grid_shape_and_dtype(variant):
    torch.manual_seed(0)
    g = build_generator(tiny_config(variant))
    batch = synthetic_batch(3)
    with torch.no_grad():
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    grid = make_grid(batch, out, max_rows=2, border=1)
    assert grid.dtype == np.uint8 and grid.shape == (2 * (H + 1), len(COLUMNS) * (W + 1), 3)
    src = ((batch["source_image"][0].permute(1, 2, 0).numpy() + 1) / 2 * 255 + 0.5).astype(np.uint8)
    assert np.abs(grid[:H, :W].astype(int) - src.astype(int)).max() <= 1
    flow_panel = grid[:H, 3 * (W + 1): 3 * (W + 1) + W]
    assert (np.all(flow_panel == 128)) == (variant == "baseline")  # grey when the variant lacks it


def test_heat_and_pose_colours_are_in_range():
    m = torch.linspace(0, 1, 11).view(1, 1, 1, 11)
    h = heat(m)
    assert h.shape == (1, 3, 1, 11) and h.min() >= 0 and h.max() <= 1
    assert h[0, 0, 0, -1] > h[0, 2, 0, -1] and h[0, 2, 0, 0] > h[0, 0, 0, 0]  # attention warm, flow cool
    p = pose_to_rgb(torch.rand(2, 18, 5, 4))
    assert p.shape == (2, 3, 5, 4) and p.min() >= 0 and p.max() <= 1


def test_grid_needs_the_batch_images():
    g = build_generator(tiny_config("full"))
    batch = synthetic_batch(1)
    with torch.no_grad():
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    del batch["target_image"]
    with pytest.raises(ValueError, match="target_image"):
        make_grid(batch, out)
