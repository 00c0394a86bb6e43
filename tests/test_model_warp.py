"""Reference tests of the pure warping ops in model/warp.py."""
import pytest
import torch

from model.warp import (
    attention_probs,
    attention_warp,
    attention_warp_reference,
    crop_boxes,
    flow_warp,
    pixel_grid,
    resize_flow,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_zero_flow_is_identity():
    x = torch.randn(2, 5, 9, 7)
    assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 9, 7)), x, atol=1e-6)


def test_single_pixel_grid_zero_flow_is_identity():
    x = torch.randn(1, 3, 1, 1)
    assert torch.allclose(flow_warp(x, torch.zeros(1, 2, 1, 1)), x, atol=1e-6)


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, 2), (-2, 1), (3, -3)])
def test_integer_flow_equals_roll_away_from_borders(dx, dy):
    x = torch.randn(2, 4, 12, 10)
    flow = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(2, 2, 12, 10)
    out = flow_warp(x, flow)
    # output (y, x) = source (y+dy, x+dx)  <=>  roll by (-dy, -dx)
    ref = torch.roll(x, shifts=(-dy, -dx), dims=(2, 3))
    m = 3
    assert torch.allclose(out[..., m:-m, m:-m], ref[..., m:-m, m:-m], atol=1e-5)


def test_flow_outside_the_image_samples_zeros():
    x = torch.ones(1, 1, 4, 4)
    out = flow_warp(x, torch.full((1, 2, 4, 4), 100.0))
    assert out.abs().max() == 0


def test_flow_warp_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        flow_warp(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError):
        flow_warp(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))


def test_resize_flow_rescales_displacements():
    flow = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 4, 3)
    big = resize_flow(flow, (8, 6))
    assert torch.allclose(big[0, 0], torch.full((8, 6), 4.0)) and torch.allclose(big[0, 1], torch.full((8, 6), -2.0))


def test_resized_integer_flow_still_matches_roll():
    x = torch.randn(1, 2, 16, 16)
    flow = resize_flow(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8), (16, 16))  # -> 2 px
    ref = torch.roll(x, shifts=(-2, -2), dims=(2, 3))
    assert torch.allclose(flow_warp(x, flow)[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3], atol=1e-5)


def test_one_hot_attention_equals_gather():
    b, d, h, w, hs, ws, c = 2, 16, 3, 4, 5, 2, 16
    n_src = hs * ws
    index = torch.randint(0, n_src, (b, h * w))
    key = torch.nn.functional.one_hot(torch.arange(n_src), d).float().T.reshape(1, d, hs, ws).expand(b, -1, -1, -1)
    query = torch.nn.functional.one_hot(index, d).float().transpose(1, 2).reshape(b, d, h, w) * 1e4  # sharp softmax
    value = torch.randn(b, c, hs, ws)
    gathered = torch.gather(value.flatten(2), 2, index.unsqueeze(1).expand(-1, c, -1)).view(b, c, h, w)
    assert torch.allclose(attention_warp(query, key, value), gathered, atol=1e-5)
    assert torch.allclose(attention_warp_reference(query, key, value), gathered, atol=1e-5)


@pytest.mark.parametrize("c", [8, 11])  # 8: fused kernel (c == d); 11: PyTorch's unfused fallback
def test_fused_attention_equals_explicit_softmax(c):
    q, k, v = torch.randn(2, 8, 6, 5) * 3, torch.randn(2, 8, 7, 4), torch.randn(2, c, 7, 4)
    assert torch.allclose(attention_warp(q, k, v), attention_warp_reference(q, k, v), atol=1e-5)


def test_fused_attention_gradients_match_explicit():
    q0, k0, v0 = torch.randn(1, 8, 4, 3), torch.randn(1, 8, 5, 3), torch.randn(1, 8, 5, 3)
    grads = []
    for fn in (attention_warp, attention_warp_reference):
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        (fn(q, k, v) * torch.arange(12.0).view(1, 1, 4, 3)).sum().backward()
        grads.append([q.grad, k.grad, v.grad])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_attention_probs_rows_sum_to_one():
    p = attention_probs(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 2, 5))
    assert p.shape == (2, 9, 10) and torch.allclose(p.sum(-1), torch.ones(2, 9), atol=1e-6)


def test_crop_of_the_whole_image_is_identity():
    x = torch.randn(2, 3, 10, 8)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 10.0]] * 2)
    assert torch.allclose(crop_boxes(x, boxes, (10, 8), sampling_ratio=1), x, atol=1e-5)


def test_crop_of_an_integer_box_equals_slicing():
    x = torch.randn(1, 3, 12, 9)
    box = torch.tensor([[2.0, 3.0, 7.0, 9.0]])  # x0, y0, x1, y1
    assert torch.allclose(crop_boxes(x, box, (6, 5), sampling_ratio=1), x[:, :, 3:9, 2:7], atol=1e-5)


def test_crop_averages_subsamples_and_is_differentiable():
    x = torch.ones(1, 1, 8, 8, requires_grad=True)
    out = crop_boxes(x, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), (2, 2), sampling_ratio=2)
    assert torch.allclose(out, torch.ones(1, 1, 2, 2), atol=1e-6)
    out.sum().backward()
    assert x.grad[0, 0, 2:6, 2:6].sum() > 0 and x.grad[0, 0, :2].abs().sum() == 0


def test_crop_rejects_bad_boxes():
    with pytest.raises(ValueError):
        crop_boxes(torch.zeros(2, 3, 8, 8), torch.zeros(3, 4), (4, 4))


def test_pixel_grid_is_x_then_y():
    g = pixel_grid(2, 3)
    assert g.shape == (1, 2, 2, 3) and g[0, 0, 1, 2] == 2 and g[0, 1, 1, 2] == 1
