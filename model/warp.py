"""Pure warping ops: flow warps with ``grid_sample``, attention warps with fused attention, box crops.

Conventions shared by every function here:
- A flow field is ``[B,2,h,w]`` in pixels of the grid it is applied to, channels ``(dx, dy)``:
  output pixel ``(y, x)`` samples the source at ``(x + dx, y + dy)``.
- Pixel ``i`` covers the continuous interval ``[i, i+1)`` and has its centre at ``i + 0.5``, which
  is ``grid_sample``'s ``align_corners=False`` convention; it also holds for 1-pixel-wide grids.
- Attention warps are single-head: one softmax over all source positions per target position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_4d(name: str, x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be [B,C,H,W], got shape {tuple(x.shape)}")


def pixel_grid(h: int, w: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Integer pixel coordinates ``[1,2,h,w]`` with channels ``(x, y)``."""
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy)).unsqueeze(0)


def flow_warp(source: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Bilinearly sample ``source`` [B,C,h,w] at ``pixel + flow`` (flow [B,2,h,w]) -> [B,C,h,w]."""
    _check_4d("source", source)
    _check_4d("flow", flow)
    if flow.shape[1] != 2 or flow.shape[0] != source.shape[0] or flow.shape[-2:] != source.shape[-2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match source {tuple(source.shape)}")
    h, w = flow.shape[-2:]
    # Coordinates stay float32 even under autocast: bf16 would round them to ~0.5 px at 128 px.
    with torch.autocast(flow.device.type, enabled=False):
        pos = pixel_grid(h, w, device=flow.device) + flow.float()  # [B,2,h,w] pixel indices
        # index i -> normalised (2i + 1) / size - 1  (align_corners=False)
        scale = torch.tensor([2.0 / w, 2.0 / h], device=flow.device).view(1, 2, 1, 1)
        grid = (pos * scale + (scale / 2 - 1)).permute(0, 2, 3, 1)  # [B,h,w,2]
        out = F.grid_sample(
            source.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
        )
    return out.to(source.dtype)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample a flow field [B,2,h,w] to ``size`` and rescale its pixel displacements to the new grid."""
    _check_4d("flow", flow)
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return out * scale


def _tokens(x: Tensor) -> Tensor:
    # [B,C,h,w] -> [B,h*w,C]; fused kernels need unit stride along C (free for channels-last input)
    return x.flatten(2).transpose(1, 2).contiguous()


def attention_warp(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Fused attention warp: ``softmax(q·k) v`` for every target position, O(N) memory.

    query [B,d,h,w] (target grid), key [B,d,hs,ws] and value [B,c,hs,ws] (source grid) -> [B,c,h,w].
    Any scaling (temperature) must already be folded into ``query``. CPU's fused kernel needs
    ``c == d``; other widths still work through PyTorch's unfused fallback.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_4d(name, t)
    if query.shape[1] != key.shape[1] or key.shape[-2:] != value.shape[-2:]:
        raise ValueError(
            f"attention shapes do not match: q {tuple(query.shape)}, k {tuple(key.shape)}, "
            f"v {tuple(value.shape)}"
        )
    b, _, h, w = query.shape
    q, k, v = (_tokens(t).unsqueeze(1) for t in (query, key, value))  # [B,1,N,C]
    out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), scale=1.0)  # [B,1,Nq,c]
    return out.squeeze(1).transpose(1, 2).reshape(b, value.shape[1], h, w)


def attention_probs(query: Tensor, key: Tensor) -> Tensor:
    """Explicit attention matrix [B,Nq,Nk] (softmax over source positions); O(N²) memory."""
    _check_4d("query", query)
    _check_4d("key", key)
    logits = torch.bmm(_tokens(query), key.flatten(2))  # [B,Nq,Nk]
    return logits.float().softmax(dim=-1).to(query.dtype)


def attention_warp_reference(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Explicit-matrix twin of :func:`attention_warp`; the test oracle."""
    b, _, h, w = query.shape
    out = torch.bmm(attention_probs(query, key), _tokens(value))  # [B,Nq,c]
    return out.transpose(1, 2).reshape(b, value.shape[1], h, w)


def crop_boxes(images: Tensor, boxes: Tensor, size: tuple[int, int], sampling_ratio: int = 2) -> Tensor:
    """RoIAlign-style crops: ``images`` [B,C,H,W], ``boxes`` [B,4] = (x0,y0,x1,y1) in pixels -> [B,C,h,w].

    Box edges are continuous coordinates (pixel i spans [i, i+1), like ``roi_align(aligned=True)``);
    each output bin averages ``sampling_ratio``² bilinear samples, differentiable in ``images``.
    Degenerate boxes are widened to one pixel so the crop is always defined.
    """
    _check_4d("images", images)
    if boxes.shape != (images.shape[0], 4):
        raise ValueError(f"boxes must be [B,4] for {images.shape[0]} images, got {tuple(boxes.shape)}")
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    H, W = images.shape[-2:]
    h, w = size
    r = sampling_ratio
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    x0, y0 = boxes[:, 0:1], boxes[:, 1:2]
    bw = (boxes[:, 2:3] - x0).clamp_min(1.0)
    bh = (boxes[:, 3:4] - y0).clamp_min(1.0)
    t_x = (torch.arange(w * r, device=images.device, dtype=torch.float32) + 0.5) / (w * r)  # sample centres
    t_y = (torch.arange(h * r, device=images.device, dtype=torch.float32) + 0.5) / (h * r)
    gx = (x0 + t_x * bw) * (2.0 / W) - 1.0  # [B,w*r] continuous x -> normalised
    gy = (y0 + t_y * bh) * (2.0 / H) - 1.0  # [B,h*r]
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [B,h*r,w*r,2]
    with torch.autocast(images.device.type, enabled=False):  # float32 coordinates, as in flow_warp
        crops = F.grid_sample(
            images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    crops = crops.to(images.dtype)
    return F.avg_pool2d(crops, r) if r > 1 else crops
