"""Gaussian pose maps rendered on a CPU training device, into reused output buffers.

On CUDA, :func:`datasets.shards.expand.render_gaussians` is a handful of batched tensor
ops and the zeroed output is one memset at device bandwidth. On a CPU neither holds: each
eager op over the K·(2r+1)² patch values costs more than a JPEG decode of the image, and a
fresh zeroed [B,K,H,W] output is paid in page faults (811 KB per image at 128×88)
(``python -m pipelines.bench data``). So on the CPU one compiled loop (numba) writes the
patch values straight into an output that is reused from batch to batch: before a reused
buffer gets its new patches, only the previous batch's patch rectangles are zeroed again,
plane by plane (the old and the new patch of a joint while its plane is in cache), and
only the non-zero values of a patch are written. A joint at whole-pixel coordinates (as
annotated, or flipped) gets a copy of one patch drawn once, without computing it again.

The arithmetic is :func:`datasets.pose.heatmaps.render_sparse`'s, operation for operation
(float64 ``exp`` cast to float32, a float32 product, ``floor(255·v + 0.5)``, ``· (1/255)``),
so the maps equal the stored/CPU ones bit for bit (tested).

The buffers come from a :class:`datasets.buffers.BufferPool` (reused only while nothing
else references them).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from datasets.buffers import BufferPool
from datasets.pose.keypoints import MISSING

_F255, _HALF, _INV255 = np.float32(255.0), np.float32(0.5), np.float32(1.0 / 255.0)
_MISSING = np.float32(MISSING)


@numba.njit(cache=True, nogil=True, inline="always")
def _rect(x: float, y: float, r: int, h: int, w: int) -> tuple[bool, int, int, int, int, int, int]:
    """A joint's patch: whether any pixel is in frame, its corner (x0, y0) and clipped rows/columns."""
    if x == _MISSING or y == _MISSING or not (x > -r - 1 and x < w + r and y > -r - 1 and y < h + r):
        return False, 0, 0, 0, 0, 0, 0
    s = 2 * r + 1
    x0, y0 = int(np.rint(np.float64(x))) - r, int(np.rint(np.float64(y))) - r
    return True, x0, y0, max(y0, 0), min(y0 + s, h), max(x0, 0), min(x0 + s, w)


@numba.njit(cache=True, nogil=True)
def _redraw(
    out: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
    sigma: float,
    r: int,
    clear: bool,
    whole: np.ndarray,
    runs: np.ndarray,
) -> None:
    """Plane by plane of ``out`` [B,K,H,W]: zero the patch of ``old``'s joint (with ``clear``),
    then write the patch of ``new``'s. Only the non-zero values are written (the rest of the
    plane is zero by then): the quantised Gaussian is zero on about a third of its square.

    A joint at whole-pixel coordinates (annotations are, and flips keep them so) has the same
    patch wherever it is: ``whole`` [2r+1, 2r+1], rendered once by this function, is copied
    instead, row by row over its non-zero runs ``runs`` [2r+1, 2] (an empty ``whole``: never)."""
    b_count, k_count, h, w = out.shape
    copy_whole = whole.shape[0] == 2 * r + 1
    s = 2 * r + 1
    gx = np.empty(s, np.float32)
    gy = np.empty(s, np.float32)
    denom = 2.0 * sigma * sigma
    for b in range(b_count):
        for k in range(k_count):
            plane = out[b, k]
            if clear:
                inside, _, _, ya, yb, xa, xb = _rect(old[b, k, 0], old[b, k, 1], r, h, w)
                if inside:
                    for i in range(ya, yb):
                        plane[i, xa:xb] = 0.0
            x, y = new[b, k, 0], new[b, k, 1]
            inside, x0, y0, ya, yb, xa, xb = _rect(x, y, r, h, w)
            if not inside:
                continue
            x64, y64 = np.float64(x), np.float64(y)
            if copy_whole and x64 == np.rint(x64) and y64 == np.rint(y64):
                for i in range(ya, yb):
                    ti = i - y0
                    lo, hi = max(runs[ti, 0], xa - x0), min(runs[ti, 1], xb - x0)
                    if hi > lo:
                        plane[i, x0 + lo : x0 + hi] = whole[ti, lo:hi]
                continue
            for t in range(xa - x0, xb - x0):
                d = np.float64(x0 + t) - x64
                gx[t] = np.float32(math.exp(-(d * d) / denom))
            for t in range(ya - y0, yb - y0):
                d = np.float64(y0 + t) - y64
                gy[t] = np.float32(math.exp(-(d * d) / denom))
            for i in range(ya, yb):
                g = gy[i - y0]
                # The row's non-zero run: the Gaussian falls off from its peak on both sides.
                lo, hi = xa - x0, xb - x0
                while lo < hi and np.int32(g * gx[lo] * _F255 + _HALF) == 0:
                    lo += 1
                while hi > lo and np.int32(g * gx[hi - 1] * _F255 + _HALF) == 0:
                    hi -= 1
                n = hi - lo
                if n == 0:
                    continue
                src = gx[lo:hi]
                row = plane[i, x0 + lo : x0 + hi]
                # Unit-stride slices and a plain index: LLVM vectorises this loop (2x measured).
                for j in range(n):
                    # v <= 1, so 255·v + 0.5 < 256: int32 truncation is the uint8 cast of quantise()
                    row[j] = np.float32(np.int32(g * src[j] * _F255 + _HALF)) * _INV255


def whole_pixel_patch(sigma: float, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The patch of a joint at whole-pixel coordinates, drawn by :func:`_redraw` itself (so its
    values are those of the general path), and each row's non-zero run [lo, hi)."""
    s = 2 * r + 1
    plane = np.zeros((1, 1, s, s), np.float32)
    at = np.array([[[r, r]]], np.float32)
    _redraw(plane, at, at, sigma, r, False, np.zeros((0, 0), np.float32), np.zeros((0, 2), np.int64))
    whole = plane[0, 0]
    runs = np.zeros((s, 2), np.int64)
    for i in range(s):
        nonzero = np.flatnonzero(whole[i])
        if len(nonzero):
            runs[i] = nonzero[0], nonzero[-1] + 1
    return whole, runs


class GaussianCanvas:
    """Renders float32 [B,K,H,W] Gaussian maps of keypoints on the CPU (see module doc)."""

    def __init__(self, size: tuple[int, int], sigma: float) -> None:
        from datasets.pose.heatmaps import patch_radius

        self.size, self.sigma, self.radius = (int(size[0]), int(size[1])), float(sigma), patch_radius(sigma)
        self.pool = BufferPool(zeroed=True)
        self.whole, self.runs = whole_pixel_patch(self.sigma, self.radius)

    def __call__(self, keypoints: torch.Tensor | np.ndarray) -> torch.Tensor:
        kp = np.ascontiguousarray(
            keypoints.numpy() if isinstance(keypoints, torch.Tensor) else keypoints, dtype=np.float32
        )
        b, k, _ = kp.shape
        buf = self.pool.take((b, k, *self.size))
        old = buf.state  # the keypoints whose patches it holds
        _redraw(
            buf.array,
            kp if old is None else old,
            kp,
            self.sigma,
            self.radius,
            old is not None,
            self.whole,
            self.runs,
        )
        buf.state = kp.copy()
        return buf.view()
