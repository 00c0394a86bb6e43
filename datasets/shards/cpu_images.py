"""uint8 NHWC images -> float32 NCHW in [-1, 1] on a CPU training device.

One compiled loop (numba) reads each byte once and writes its float through a 256-entry
table, channel plane by channel plane: 24 µs an image at 128×88 against 44 µs for numpy's
transposing multiply-and-subtract into the same buffer and 52 µs into a fresh one
(measured side by side on a 2-core VM). The table holds numpy's own
``float32(v) · float32(2/255) − 1``, so the values are those of that numpy expression
and of the CUDA path's tensor ops bit for bit (tested). :class:`ImageConverter` writes
into buffers reused from batch to batch (:mod:`datasets.buffers`).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from datasets.buffers import BufferPool

LEVELS = (np.arange(256, dtype=np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _to_planes(out: np.ndarray, nhwc: np.ndarray, table: np.ndarray) -> None:
    b_count, h, w, c_count = nhwc.shape
    for b in range(b_count):
        for c in range(c_count):
            for y in range(h):
                for x in range(w):
                    out[b, c, y, x] = table[nhwc[b, y, x, c]]


def float_planes(nhwc: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [B,H,W,C] -> float32 [B,C,H,W] in [-1, 1], into ``out`` when given."""
    if nhwc.dtype != np.uint8 or nhwc.ndim != 4:
        raise ValueError(f"expected uint8 [B,H,W,C] images, got {nhwc.dtype} {list(nhwc.shape)}")
    b, h, w, c = nhwc.shape
    if out is None:
        out = np.empty((b, c, h, w), np.float32)
    _to_planes(out, nhwc, LEVELS)
    return out


class ImageConverter:
    """:func:`float_planes` into reused buffers, as tensors (one converter per role)."""

    def __init__(self) -> None:
        self.pool = BufferPool()

    def __call__(self, nhwc: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = nhwc.numpy() if isinstance(nhwc, torch.Tensor) else np.asarray(nhwc)
        b, h, w, c = array.shape
        buf = self.pool.take((b, c, h, w))
        float_planes(array, buf.array)
        return buf.view()
