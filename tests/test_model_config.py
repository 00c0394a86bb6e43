"""Model, loss and optim configs: defaults, the paper size, validation, and the params.yaml loader."""
import pytest

from model.config import VARIANTS, LossConfig, ModelConfig, OptimConfig
from pipelines.config.params import ConfigError, build_dataclass


def test_variants_decide_the_parts():
    flags = {v: (ModelConfig(variant=v).uses_attention, ModelConfig(variant=v).uses_flow,
                 ModelConfig(variant=v).uses_face) for v in VARIANTS}
    assert flags == {"baseline": (False, False, False), "attn": (True, False, False), "flow": (False, True, False),
                     "no_face": (True, True, False), "full": (True, True, True)}
    assert ModelConfig(variant="baseline").warp_scales == (8, 4, 2)
    assert ModelConfig(variant="attn").warp_scales == (8, 4)


def test_widths_double_per_scale_up_to_the_cap():
    cfg = ModelConfig()
    assert [cfg.width(s) for s in (1, 2, 4, 8, 16)] == [16, 32, 64, 128, 256]
    paper = ModelConfig.paper()
    assert [paper.width(s) for s in (1, 2, 4, 8)] == [32, 64, 128, 256]


def test_loader_fills_the_sections_and_rejects_unknown_keys():
    cfg = build_dataclass(ModelConfig, {"variant": "flow", "attn_scales": [8], "pose_channels": 5}, "model")
    assert cfg.attn_scales == (8,) and cfg.variant == "flow"
    with pytest.raises(ConfigError, match="unknown key 'channels'"):
        build_dataclass(ModelConfig, {"channels": 3}, "model")
    with pytest.raises(ConfigError, match="valid variants"):
        build_dataclass(ModelConfig, {"variant": "nope"}, "model")
    assert build_dataclass(LossConfig, {"backbone": "none", "r1_gamma": 1}, "loss").r1_gamma == 1.0
    assert build_dataclass(OptimConfig, {"betas": [0.0, 0.99]}, "optim").betas == (0.0, 0.99)


@pytest.mark.parametrize("cls,bad", [(LossConfig, dict(l1=-1.0)), (LossConfig, dict(flow_reg_kernels=(4,))),
                                     (LossConfig, dict(r1_every=0)), (OptimConfig, dict(amp="fp8")),
                                     (OptimConfig, dict(betas=(0.5,))), (OptimConfig, dict(ema_decay=1.0))])
def test_bad_values_fail(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


def test_weights_cover_every_generator_term():
    w = LossConfig().weights()
    assert w["l1"] == 5.0 and w["content"] == 0.5 and w["style"] == 500.0 and w["g_adv"] == 2.0
    assert w["sampling_correctness"] == 5.0 and w["flow_reg"] == 0.0025
