"""Each loss term is zero (or minimal) for identical inputs and positive otherwise; backbones load offline."""
import pytest
import torch

from model.backbones import PixelBackbone, build_backbone
from model.config import LossConfig
from model.losses import (
    attention_reconstruction_loss,
    content_loss,
    flow_regularization_loss,
    l1_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    masked_mean,
    r1_penalty,
    sampling_correctness_loss,
    style_loss,
)
from model.warp import flow_warp
from tests.model_utils import H, W, synthetic_batch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def images():
    b = synthetic_batch(2, seed=3)
    return b["source_image"], b["target_image"]


def test_l1(images):
    a, b = images
    assert torch.all(l1_loss(a, a) == 0) and torch.all(l1_loss(a, b) > 0)
    assert l1_loss(a, b).shape == (2,)


@pytest.mark.parametrize("name", ["none", "effnet_lite0"])
def test_content_and_style(images, name):
    bb = build_backbone(LossConfig(backbone=name))
    a, b = images
    fa, fb = bb(a), bb(b)
    assert torch.allclose(content_loss(fa, fa, bb.content_layers), torch.zeros(2))
    assert torch.allclose(style_loss(fa, fa, bb.style_layers), torch.zeros(2))
    assert torch.all(content_loss(fa, fb, bb.content_layers) > 0)
    assert torch.all(style_loss(fa, fb, bb.style_layers) > 0)


def test_lsgan_terms_are_minimal_at_their_targets():
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    real, fake = lsgan_d_loss(ones, zeros)
    assert torch.all(real == 0) and torch.all(fake == 0) and torch.all(lsgan_g_loss(ones) == 0)
    real, fake = lsgan_d_loss(zeros, ones)
    assert torch.all(real > 0) and torch.all(fake > 0) and torch.all(lsgan_g_loss(zeros) > 0)


def test_sampling_correctness_zero_for_identity_positive_for_wrong_flow():
    bb = PixelBackbone()
    img = synthetic_batch(1, seed=1, h=64, w=44)["source_image"]
    feat = bb(img)["p4"]  # [1,28,16,11]
    zero = torch.zeros(1, 2, 16, 11)
    assert sampling_correctness_loss(feat, feat, zero).abs().max() < 1e-5
    wrong = torch.full((1, 2, 16, 11), 4.0)
    assert sampling_correctness_loss(feat, feat, wrong).item() > 1e-3
    # a target that is the source shifted is matched by the right flow better than by the zero flow
    shift = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 16, 11)
    target = flow_warp(feat, shift)
    assert sampling_correctness_loss(feat, target, shift) < sampling_correctness_loss(feat, target, zero)


def test_sampling_correctness_resizes_the_flow_and_has_gradient():
    feat = torch.rand(2, 8, 8, 6)
    flow = (torch.randn(2, 2, 4, 3) * 0.5).requires_grad_(True)
    loss = sampling_correctness_loss(feat, torch.rand(2, 8, 8, 6), flow)
    loss.sum().backward()
    assert loss.shape == (2,) and flow.grad.abs().sum() > 0


def test_flow_regularization_zero_for_affine_positive_for_rough():
    ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(7.0), indexing="ij")
    affine = torch.stack([0.3 * xs - 0.2 * ys + 1.5, 0.1 * xs + 0.4 * ys - 2.0]).unsqueeze(0)
    assert flow_regularization_loss(affine).abs().max() < 1e-8
    assert flow_regularization_loss(torch.zeros(1, 2, 9, 7)).abs().max() == 0
    assert flow_regularization_loss(torch.randn(1, 2, 9, 7)).item() > 0.1


def test_flow_regularization_skips_windows_larger_than_the_grid():
    assert flow_regularization_loss(torch.randn(2, 2, 4, 3), (5,)).abs().max() == 0
    assert flow_regularization_loss(torch.randn(2, 2, 4, 3), (3, 5)).min() > 0


def test_attention_reconstruction(images):
    _, target = images
    small = torch.nn.functional.interpolate(target, size=(8, 6), mode="bilinear", antialias=True)
    assert attention_reconstruction_loss(small, target).abs().max() < 1e-6
    assert torch.all(attention_reconstruction_loss(torch.zeros_like(small), target) > 0)


def test_masked_mean_ignores_invalid_and_handles_empty():
    v = torch.tensor([1.0, 100.0, 3.0], requires_grad=True)
    assert masked_mean(v, torch.tensor([True, False, True])) == 2.0
    empty = masked_mean(v, torch.zeros(3, dtype=torch.bool))
    empty.backward()
    assert empty == 0 and torch.all(v.grad == 0)


def test_r1_penalty_zero_for_constant_d_positive_otherwise():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert torch.all(r1_penalty((x * 0).sum((1, 2, 3)), x) == 0)
    assert torch.all(r1_penalty((x * 2).sum((1, 2, 3)), x) > 0)


def test_face_perceptual_uses_the_same_content_term(images):
    bb = PixelBackbone()
    a, b = images
    crops = torch.nn.functional.interpolate(a, size=(16, 16))
    assert content_loss(bb(crops), bb(crops), bb.content_layers).abs().max() == 0


def test_backbone_choice_is_reported_and_vgg19_needs_a_path(tmp_path):
    assert "EfficientNet-Lite0" in build_backbone(LossConfig(backbone="effnet_lite0")).description
    assert build_backbone(LossConfig(backbone="none")).description.startswith("none")
    with pytest.raises(ValueError, match="vgg19_weights"):
        build_backbone(LossConfig(backbone="vgg19"))
    with pytest.raises(FileNotFoundError):
        build_backbone(LossConfig(backbone="vgg19", vgg19_weights=str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="valid: vgg19, effnet_lite0, none"):
        LossConfig(backbone="resnet")


def test_vgg19_loads_a_torchvision_layout_state_dict(tmp_path):
    # A randomly initialised VGG19 in torchvision's key layout stands in for the real weights file.
    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
    state, i, cin = {}, 0, 3
    for v in cfg:
        if v == "M":
            i += 1
            continue
        state[f"features.{i}.weight"] = torch.randn(v, cin, 3, 3) * 0.05
        state[f"features.{i}.bias"] = torch.zeros(v)
        cin, i = v, i + 2
    state["classifier.0.weight"] = torch.zeros(1)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    bb = build_backbone(LossConfig(backbone="vgg19", vgg19_weights=str(path)))
    feats = bb(torch.rand(1, 3, H * 2, W * 2) * 2 - 1)
    assert feats["relu3_1"].shape == (1, 256, H // 2, W // 2)
    assert set(feats) == set(bb.layers) and bb.correctness_layer(4) == "relu3_1"
    assert not any(p.requires_grad for p in bb.parameters()) and not bb.train().training


def test_pose_weighted_l1_counts_only_where_a_pose_map_is_drawn():
    from model.losses import pose_weighted_l1

    real = torch.zeros(2, 3, 8, 8)
    fake = torch.zeros_like(real)
    fake[:, :, 0, 0] = 1.0  # wrong far from any part
    source, target = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    source[:, 1, 4, 4] = 1.0
    target[:, 2, 5, 5] = 0.5
    assert pose_weighted_l1(fake, real, source, target) == 0.0
    fake[:, :, 5, 5] = 0.6  # wrong where the target's part is drawn at weight 0.5
    # weighted mean: 0.5 * 0.6 per channel over a weight of 1.5 per channel
    assert pose_weighted_l1(fake, real, source, target).item() == pytest.approx(0.5 * 0.6 / 1.5)
    half = torch.nn.functional.interpolate(source, scale_factor=0.5)  # maps at another size are resized
    assert torch.isfinite(pose_weighted_l1(fake, real, half, half))


def test_change_weighted_l1_weighs_each_pair_by_the_pixels_it_changes():
    from model.losses import change_weighted_l1

    source = torch.zeros(3, 3, 8, 8)
    real = source.clone()
    real[0, :, 2, 2] = 1.0  # pair 0: one pixel changes
    real[1] = 0.5  # pair 1: every pixel changes by 0.5; pair 2: nothing changes
    fake = real.clone()
    fake[:, :, 7, 7] += 1.0  # wrong where no pair changes anything: not counted for pairs 0 and 2
    assert change_weighted_l1(fake, real, source).item() == pytest.approx((0.0 + 1.0 / 64) / 2)
    fake = real.clone()
    fake[0, :, 2, 2] = 0.0  # pair 0 misses its one change: its whole error, however small the change
    assert change_weighted_l1(fake, real, source).item() == pytest.approx((1.0 + 0.0) / 2)
    assert change_weighted_l1(source, source, source).item() == 0.0  # identical pairs: nothing to weigh
