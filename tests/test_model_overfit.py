"""A tiny model of every variant overfits 4 synthetic pairs on CPU through the full GAN step."""
import time

import pytest
import torch

from model.config import VARIANTS, LossConfig, OptimConfig
from model.discriminator import build_discriminators
from model.gan import GanStep
from model.generator import build_generator
from tests.model_utils import synthetic_batch, tiny_config

STEPS = 60
BUDGET_S = 60.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_model_overfits_four_pairs(variant):
    torch.manual_seed(0)
    cfg = tiny_config(variant)
    g = build_generator(cfg)
    d, d_face = build_discriminators(cfg)
    # GFLA's loss weights; a learning rate high enough to memorise 4 pairs in a few dozen steps.
    step = GanStep(g, d, d_face, cfg, LossConfig(backbone="none"), OptimConfig(lr_g=2e-3, lr_d=2e-4))
    batch = synthetic_batch(4, seed=0)

    def l1_to_target() -> float:
        with torch.no_grad():
            out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
        return (out.image - batch["target_image"]).abs().mean().item()

    start, t0 = l1_to_target(), time.perf_counter()
    for _ in range(STEPS):
        assert step.step(batch)["skipped"] == 0.0
    elapsed, end = time.perf_counter() - t0, l1_to_target()
    assert elapsed < BUDGET_S
    assert end <= 0.5 * start, f"{variant}: L1 {start:.3f} -> {end:.3f} after {STEPS} steps"
