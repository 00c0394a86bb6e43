"""Generator and discriminator shapes, value ranges and gradients for every variant (tiny configs)."""
import pytest
import torch

from model.config import VARIANTS, LossConfig, ModelConfig, OptimConfig
from model.discriminator import build_discriminators
from model.gan import GanStep
from model.generator import build_generator, count_parameters
from tests.model_utils import H, P, W, synthetic_batch, tiny_config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _run(variant, b=2, **kw):
    g = build_generator(tiny_config(variant))
    batch = synthetic_batch(b)
    return g, g(batch["source_image"], batch["source_pose"], batch["target_pose"], **kw)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_for_every_variant(variant):
    cfg = tiny_config(variant)
    g, out = _run(variant, b=3)
    assert out.image.shape == (3, 3, H, W)
    assert out.image.abs().max() <= 1
    expect_flow = {8: (4, 3), 4: (8, 6), 2: (16, 11)} if cfg.uses_flow else {}
    assert {s: tuple(f.shape[-2:]) for s, f in out.flows.items()} == expect_flow
    assert all(f.shape[:2] == (3, 2) for f in out.flows.values())
    assert set(out.flow_warped) == set(out.flow_warped_image) == set(expect_flow)
    expect_attn = {8, 4} if cfg.uses_attention else set()
    assert set(out.attn_warped) == set(out.attn_warped_image) == expect_attn
    for s in expect_attn:
        assert out.attn_warped[s].shape == (3, cfg.width(s), *out.attn_warped_image[s].shape[-2:])
        assert out.attn_warped_image[s].shape[1] == 3
    both = expect_attn & set(expect_flow)
    assert set(out.combination_maps) == both
    assert out.query_attention is None


@pytest.mark.parametrize("variant", ["full", "no_face"])
def test_combination_maps_lie_in_unit_interval(variant):
    _, out = _run(variant)
    for m in out.combination_maps.values():
        assert m.shape[1] == 1 and m.min() >= 0 and m.max() <= 1


def test_combined_textures_are_the_convex_mix():
    g = build_generator(tiny_config("full"))
    batch = synthetic_batch(2)
    captured = {}
    block = g.warp_blocks["4"]
    block.register_forward_hook(lambda mod, args, out: captured.setdefault("tex", args[1]))
    out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    m = out.combination_maps[4]
    assert torch.allclose(captured["tex"], m * out.attn_warped[4] + (1 - m) * out.flow_warped[4], atol=1e-6)


def test_query_attention_is_a_distribution_over_the_source():
    queries = torch.tensor([[3.0, 4.0], [20.0, 30.0]])
    _, out = _run("full", attn_queries=queries)
    assert set(out.query_attention) == {8, 4}
    a = out.query_attention[4]
    assert a.shape == (2, 2, 8, 6) and torch.allclose(a.sum((-1, -2)), torch.ones(2, 2), atol=1e-5)


def test_baseline_and_flow_have_no_attention_modules():
    assert build_generator(tiny_config("baseline")).attention is None
    assert build_generator(tiny_config("baseline")).flow_estimator is None
    assert build_generator(tiny_config("flow")).attention is None
    assert build_generator(tiny_config("attn")).flow_estimator is None


def test_unknown_variant_fails_clearly():
    with pytest.raises(ValueError, match="valid variants: baseline, attn, flow, no_face, full"):
        ModelConfig(variant="attention")


@pytest.mark.parametrize("bad", [dict(attn_scales=(3,)), dict(flow_scales=(8, 8)), dict(norm="batch"),
                                 dict(attn_dim=4), dict(flow_depth=4), dict(base_channels=0)])
def test_bad_config_values_fail(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_bad_inputs_fail_with_value_error():
    g = build_generator(tiny_config("full"))
    batch = synthetic_batch(2)
    with pytest.raises(ValueError, match="pose_channels"):
        g(batch["source_image"], batch["source_pose"][:, :5], batch["target_pose"])
    with pytest.raises(ValueError, match="source_image"):
        g(batch["source_image"][:, :1], batch["source_pose"], batch["target_pose"])
    with pytest.raises(ValueError, match="too small"):
        g(torch.zeros(1, 3, 8, 8), torch.zeros(1, P, 8, 8), torch.zeros(1, P, 8, 8))
    with pytest.raises(ValueError, match="attn_queries"):
        g(batch["source_image"], batch["source_pose"], batch["target_pose"], attn_queries=torch.zeros(3))


def test_discriminators_per_variant():
    for variant in VARIANTS:
        d, d_face = build_discriminators(tiny_config(variant))
        assert (d_face is not None) == (variant == "full")
        assert d(torch.zeros(2, 3, H, W)).shape[:2] == (2, 1)
    d, d_face = build_discriminators(tiny_config("full"))
    faces = d_face.crop(torch.zeros(2, 3, H, W), synthetic_batch(2)["target_face_box"])
    assert faces.shape == (2, 3, 16, 16) and d_face(faces).shape[:2] == (2, 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_finite_nonzero_gradient(variant):
    cfg = tiny_config(variant)
    g = build_generator(cfg)
    d, d_face = build_discriminators(cfg)
    step = GanStep(g, d, d_face, cfg, LossConfig(backbone="none", r1_gamma=1.0), OptimConfig())
    batch = step.prepare_batch(synthetic_batch(2))
    g_total, terms, out = step.generator_loss(batch)
    g_total.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None, f"G.{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"G.{name}: {p.grad.abs().sum()}"
    step.opt_d.zero_grad(set_to_none=True)
    d_total, _ = step.discriminator_loss(batch, out.image, r1=True)
    d_total.backward()
    for prefix, module in (("D", d), ("D_face", d_face)):
        for name, p in (module.named_parameters() if module is not None else []):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{prefix}.{name}"


def test_parameter_counts_grow_with_the_variant():
    counts = {v: count_parameters(build_generator(tiny_config(v))) for v in VARIANTS}
    assert counts["full"] == counts["no_face"] > counts["flow"] > counts["baseline"]
    assert counts["full"] > counts["attn"]


def test_paper_configuration_builds():
    cfg = ModelConfig.paper(variant="full")
    assert cfg.base_channels == 64 and cfg.face_crop_size == 64
    assert 5e6 < count_parameters(build_generator(cfg)) < 5e7


@pytest.mark.slow
def test_generator_compiles_as_one_graph():
    # aot_eager checks tracing (no graph breaks, dataclass output, backward) without inductor's codegen.
    g = build_generator(tiny_config("full"))
    batch = synthetic_batch(2)
    compiled = torch.compile(g, backend="aot_eager", fullgraph=True)
    out = compiled(batch["source_image"], batch["source_pose"], batch["target_pose"])
    ref = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    assert torch.allclose(out.image, ref.image, atol=1e-5) and set(out.flows) == set(ref.flows)
    out.image.mean().backward()
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("variant", ["baseline", "attn"])
def test_decoder_image_carries_the_source_colours_past_the_textures(variant):
    # With the source textures silenced (the reference encoder for the baseline, the attention's
    # value and output for attn) only the decoder's image channels bring the source image's
    # colours to the output.
    batch = synthetic_batch(2)
    changed = {}
    for decoder_image in (False, True):
        torch.manual_seed(0)
        g = build_generator(tiny_config(variant, decoder_image=decoder_image))
        silenced = [g.reference_encoder] if variant == "baseline" else [g.attention.value, g.attention.out]
        with torch.no_grad():
            for p in (p for m in silenced for p in m.parameters()):
                p.zero_()
            a = g(batch["source_image"], batch["source_pose"], batch["target_pose"]).image
            b = g(batch["source_image"].flip(-1), batch["source_pose"], batch["target_pose"]).image
        changed[decoder_image] = (a - b).abs().max().item()
    assert changed[False] < 1e-6 and changed[True] > 1e-4


def test_decoder_image_widens_only_the_warping_blocks():
    plain, wide = (build_generator(tiny_config("full", decoder_image=d)) for d in (False, True))
    c = tiny_config("full").width(8)
    assert wide.warp_blocks["8"].fuse[0][2].in_channels == 2 * c + 3 == plain.warp_blocks["8"].fuse[0][2].in_channels + 3
    assert count_parameters(wide) - count_parameters(plain) == sum(
        9 * 3 * tiny_config("full").width(s) + 2 * 3 for s in tiny_config("full").warp_scales)  # conv weights + norm affine
    assert ModelConfig.paper().decoder_image is False


@pytest.mark.parametrize("variant", ["baseline", "attn", "flow", "full"])
def test_image_skip_starts_at_the_finest_warped_source_image(variant):
    torch.manual_seed(0)
    g = build_generator(tiny_config(variant, image_skip=True, decoder_image=True))
    batch = synthetic_batch(2)
    with torch.no_grad():
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    finest = min(g.cfg.warp_scales)
    if variant == "baseline":
        warped = torch.nn.functional.interpolate(batch["source_image"], size=out.flow_warped_image.get(
            finest, torch.zeros(1, 1, (H + 1) // 2, (W + 1) // 2)).shape[-2:], mode="bilinear", antialias=True)
    else:
        warped = out.flow_warped_image.get(finest, out.attn_warped_image.get(finest))
    up = torch.nn.functional.interpolate(warped, size=(H, W), mode="bilinear", align_corners=False)
    # the small-init head leaves the output within a few hundredths of the warped image
    assert (out.image - up.clamp(-0.98, 0.98)).abs().mean() < 0.05
    assert not torch.allclose(out.image, up)  # ... but the decoder does contribute
    plain = build_generator(tiny_config(variant))
    assert count_parameters(plain) == count_parameters(build_generator(tiny_config(variant, image_skip=True)))
    assert ModelConfig.paper().image_skip is False


@pytest.mark.parametrize("variant", ["flow", "full"])
def test_full_resolution_skip_warps_the_source_image_itself(variant):
    from model.warp import flow_warp, resize_flow

    torch.manual_seed(0)
    g = build_generator(tiny_config(variant, image_skip=True, skip_full_resolution=True))
    batch = synthetic_batch(2)
    with torch.no_grad():
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    finest = min(g.cfg.warp_scales)
    flowed = flow_warp(batch["source_image"], resize_flow(out.flows[finest], (H, W)))
    if variant == "full" and finest in out.combination_maps:
        up = lambda x: torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)  # noqa: E731
        m = up(out.combination_maps[finest])
        flowed = m * up(out.attn_warped_image[finest]) + (1 - m) * flowed
    assert (out.image - flowed.clamp(-0.98, 0.98)).abs().mean() < 0.05
    upsampled = torch.nn.functional.interpolate(out.flow_warped_image[finest], size=(H, W), mode="bilinear")
    # a full-resolution warp keeps detail the stride-2 image lost
    assert (flowed - upsampled).abs().mean() > 0.01
    assert ModelConfig.paper().skip_full_resolution is False


@pytest.mark.parametrize("image_skip", [False, True])
def test_full_resolution_head_sees_the_target_pose_and_starts_at_the_skip_image(image_skip):
    cfg = tiny_config(
        "full", image_skip=image_skip, skip_full_resolution=image_skip, full_resolution_head=True
    )
    g = build_generator(cfg)
    first = g.full_head[0][2]
    assert first.in_channels == cfg.width(1) + P + (3 if image_skip else 0)
    batch = {k: v.requires_grad_(k == "target_pose") for k, v in synthetic_batch(2).items()}
    out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    assert out.image.shape == (2, 3, H, W)
    # one output pixel's gradient reaches the target pose maps at that very pixel
    (grad,) = torch.autograd.grad(out.image[0, :, H // 2, W // 2].sum(), batch["target_pose"])
    assert grad[0, :, H // 2, W // 2].abs().sum() > 0
    if image_skip:
        plain = build_generator(tiny_config("full", image_skip=True, skip_full_resolution=True))
        missing, unexpected = plain.load_state_dict(g.state_dict(), strict=False)
        assert not missing and all(k.startswith("full_head.") for k in unexpected)
        with torch.no_grad():
            start = plain(batch["source_image"], batch["source_pose"], batch["target_pose"].detach())
        # the head adds a correction that starts small: the output still starts near the warped source
        assert (out.image.detach() - start.image).abs().mean() < 0.1
    assert ModelConfig.paper().full_resolution_head is False
