"""Gaussian pose heatmaps: one channel per keypoint, σ in pixels, all-zero for a missing joint.

Values are ``exp(-d² / 2σ²)`` quantised to uint8 (``round(255·v)``).  A Gaussian
quantises to zero beyond ``r = ceil(σ·sqrt(2·ln 510))`` ≈ 3.53σ pixels, so a
channel is fully described by one (2r+1)² patch.  That is what is stored and
moved around (:class:`SparseHeatmaps`, ~0.5 KB per joint at σ=3 before
deflate) instead of K×H×W dense maps (405 KB at 18×128×88 as uint8, 1.6 MB per
sample as dense float16 at 256×176, which measured 4× slower to read than
keypoints).  Dense float32 maps are produced only at the very end, by pasting
patches into a zeroed batch tensor (:func:`paste_into`), so the cost grows with
the number of joints, not with H×W.

Stored format (``.pose.bin`` in the shards, little endian)::

    b"HMP1"  u16 K  u16 H  u16 W  u16 S  f32 sigma  u16 n
    u8[n] channel  i16[n,2] (y0, x0) of each patch's top-left corner
    zlib(u8[n,S,S] patch values)

Patches may extend past the image border; pasting clips them.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from datasets.pose.keypoints import MISSING

MAGIC = b"HMP1"
_HEADER = struct.Struct("<4sHHHHfH")


def patch_radius(sigma: float) -> int:
    """Smallest radius beyond which ``round(255·exp(-d²/2σ²))`` is 0 on both axes."""
    if sigma <= 0:
        raise ValueError(f"heatmap sigma must be > 0, got {sigma}")
    return math.ceil(sigma * math.sqrt(2.0 * math.log(510.0)))


@dataclass(frozen=True)
class SparseHeatmaps:
    """K channels of an H×W heatmap stack, held as one uint8 patch per visible joint."""

    num_channels: int
    height: int
    width: int
    sigma: float
    channels: np.ndarray  # int64 [n] channel index of each patch
    origins: np.ndarray  # int64 [n, 2] (y0, x0) of each patch
    patches: np.ndarray  # uint8 [n, S, S]

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[1]) if self.patches.ndim == 3 else 2 * patch_radius(self.sigma) + 1


def render_dense(keypoints: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """Reference renderer: float32 [K, H, W] unquantised Gaussians (separable), zeros for -1."""
    h, w = size
    kp = np.asarray(keypoints, np.float32)
    out = np.zeros((len(kp), h, w), np.float32)
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for k, (x, y) in enumerate(kp.astype(np.float64)):
        if x == MISSING or y == MISSING:
            continue
        gy = np.exp(-((ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)
        gx = np.exp(-((xs - x) ** 2) / (2 * sigma**2)).astype(np.float32)
        out[k] = gy[:, None] * gx[None, :]
    return out


def quantise(heatmaps: np.ndarray) -> np.ndarray:
    """float [.., H, W] in [0, 1] -> uint8 ``round(255·v)``."""
    # floor(v·255 + 0.5): values are already in [0, 1] (np.clip is slow on small arrays)
    return (np.asarray(heatmaps, np.float32) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def render_sparse(keypoints: np.ndarray, size: tuple[int, int], sigma: float) -> SparseHeatmaps:
    """Quantised heatmaps of ``keypoints`` (x, y) as patches; equals ``quantise(render_dense(...))``."""
    h, w = size
    kp = np.asarray(keypoints, np.float32)
    r = patch_radius(sigma)
    s = 2 * r + 1
    vis = (kp[:, 0] != MISSING) & (kp[:, 1] != MISSING)
    # A visible joint whose whole patch lies outside the frame contributes nothing.
    vis &= (kp[:, 0] > -r - 1) & (kp[:, 0] < w + r) & (kp[:, 1] > -r - 1) & (kp[:, 1] < h + r)
    channels = np.flatnonzero(vis)
    pts = kp[channels].astype(np.float64)
    origin = np.rint(pts).astype(np.int64) - r  # (x0, y0)
    offs = np.arange(s, dtype=np.float64)
    # float32 products, like render_dense, so both round the same way.
    gx = np.exp(-((origin[:, 0:1] + offs - pts[:, 0:1]) ** 2) / (2 * sigma**2)).astype(np.float32)
    gy = np.exp(-((origin[:, 1:2] + offs - pts[:, 1:2]) ** 2) / (2 * sigma**2)).astype(np.float32)
    patches = quantise(gy[:, :, None] * gx[:, None, :])
    return SparseHeatmaps(
        len(kp), h, w, float(sigma), channels.astype(np.int64), origin[:, ::-1].copy(), patches
    )


def _clipped(hm: SparseHeatmaps) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """Per in-frame patch: (index, channel, y0, y1, x0, x1, dy, dx) — destination rows
    [y0, y1) and cols [x0, x1), and the offset of that window inside the patch."""
    s = hm.patch_size
    oy, ox = hm.origins[:, 0], hm.origins[:, 1]
    ya, yb = np.maximum(oy, 0), np.minimum(oy + s, hm.height)
    xa, xb = np.maximum(ox, 0), np.minimum(ox + s, hm.width)
    keep = np.flatnonzero((ya < yb) & (xa < xb))
    cols = (keep, hm.channels[keep], ya[keep], yb[keep], xa[keep], xb[keep], (ya - oy)[keep], (xa - ox)[keep])
    return list(zip(*(c.tolist() for c in cols)))


def to_dense(hm: SparseHeatmaps) -> np.ndarray:
    """uint8 [K, H, W] dense heatmaps."""
    out = np.zeros((hm.num_channels, hm.height, hm.width), np.uint8)
    for i, c, y0, y1, x0, x1, dy, dx in _clipped(hm):
        out[c, y0:y1, x0:x1] = hm.patches[i, dy : dy + y1 - y0, dx : dx + x1 - x0]
    return out


def paste_into(out: np.ndarray, batch: list[SparseHeatmaps]) -> np.ndarray:
    """Paste a batch of sparse heatmaps into a zeroed float32 [B, K, H, W] array as v/255.

    ``out`` is normally a fresh ``np.zeros`` array (calloc: pages that receive
    no patch are never touched here).  A slice loop beats one big fancy
    index here (measured ~2x): a patch is a few hundred contiguous-ish values.
    """
    for b, hm in enumerate(batch):
        scaled = hm.patches.astype(np.float32) * np.float32(1.0 / 255.0)
        dst = out[b]
        for i, c, y0, y1, x0, x1, dy, dx in _clipped(hm):
            dst[c, y0:y1, x0:x1] = scaled[i, dy : dy + y1 - y0, dx : dx + x1 - x0]
    return out


def pack(batch: list[SparseHeatmaps]) -> dict[str, np.ndarray]:
    """A batch of sparse heatmaps as four flat arrays (one pickle each instead of four per image)."""
    first = batch[0]
    s = first.patch_size
    return {
        "shape": np.array([first.num_channels, first.height, first.width, s], np.int64),
        "sigma": np.array([first.sigma], np.float64),
        "counts": np.array([len(h.channels) for h in batch], np.int64),
        "channels": np.concatenate([h.channels for h in batch]).astype(np.int64),
        "origins": np.concatenate([h.origins for h in batch]).reshape(-1, 2).astype(np.int64),
        "patches": np.concatenate([h.patches.reshape(-1, s, s) for h in batch]).astype(np.uint8),
    }


def unpack(packed: dict[str, np.ndarray]) -> list[SparseHeatmaps]:
    k, h, w, _ = (int(v) for v in packed["shape"])
    sigma = float(packed["sigma"][0])
    out, start = [], 0
    for n in packed["counts"].tolist():
        sl = slice(start, start + n)
        out.append(
            SparseHeatmaps(
                k, h, w, sigma, packed["channels"][sl], packed["origins"][sl], packed["patches"][sl]
            )
        )
        start += n
    return out


def encode(hm: SparseHeatmaps) -> bytes:
    """Serialise to the ``HMP1`` format (deterministic bytes)."""
    n = len(hm.channels)
    s = hm.patch_size
    head = _HEADER.pack(MAGIC, hm.num_channels, hm.height, hm.width, s, hm.sigma, n)
    body = hm.channels.astype(np.uint8).tobytes() + hm.origins.astype("<i2").tobytes()
    return head + body + zlib.compress(np.ascontiguousarray(hm.patches, np.uint8).tobytes(), 6)


def decode(data: bytes) -> SparseHeatmaps:
    """Parse ``HMP1`` bytes; raises ValueError on anything malformed."""
    if len(data) < _HEADER.size:
        raise ValueError(f"pose heatmaps: {len(data)} bytes, shorter than the header")
    magic, k, h, w, s, sigma, n = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"pose heatmaps: bad magic {magic!r}")
    pos = _HEADER.size
    channels = np.frombuffer(data, np.uint8, n, pos).astype(np.int64)
    pos += n
    origins = np.frombuffer(data, "<i2", 2 * n, pos).astype(np.int64).reshape(n, 2)
    pos += 4 * n
    try:
        raw = zlib.decompress(data[pos:])
    except zlib.error as exc:
        raise ValueError(f"pose heatmaps: corrupt patch data ({exc})") from None
    if len(raw) != n * s * s or (n and channels.max() >= k):
        raise ValueError("pose heatmaps: patch data does not match the header")
    patches = np.frombuffer(raw, np.uint8).reshape(n, s, s)
    return SparseHeatmaps(k, h, w, float(sigma), channels, origins, patches)


def flip_horizontal(hm: SparseHeatmaps, perm: np.ndarray) -> SparseHeatmaps:
    """Mirror left-right and swap channels: channel ``i`` of the result is ``perm[i]`` mirrored."""
    inverse = np.argsort(perm)
    s = hm.patch_size
    origins = hm.origins.copy()
    origins[:, 1] = hm.width - 1 - (hm.origins[:, 1] + s - 1)
    return SparseHeatmaps(
        hm.num_channels,
        hm.height,
        hm.width,
        hm.sigma,
        inverse[hm.channels],
        origins,
        hm.patches[:, :, ::-1].copy(),
    )
