"""Facial landmark convention: the 68-point iBUG scheme, flips, and part maps.

In memory landmarks are float32 arrays [68, 2] of (x, y) pixel coordinates in
the working frame (pixel centres at integer coordinates, like body keypoints);
a missing or hidden point is (-1, -1).  The portrait CSVs store y first, then x,
as JSON lists of 68 ints (see :func:`encode_row` / :func:`decode_row`).

Index ranges (0-based, the order every 68-point tool uses; "right" is the
subject's right, which is on the image's *left* in a frontal photo)::

    jaw          0-16   image-left ear level, down round the chin (8), to image-right
    right brow  17-21   outer -> inner
    left brow   22-26   inner -> outer
    nose bridge 27-30   between the eyes -> tip
    lower nose  31-35   image-left ala -> subnasale (33) -> image-right ala
    right eye   36-41   outer corner, upper lid (37, 38), inner corner, lower lid (40, 41)
    left eye    42-47   inner corner, upper lid (43, 44), outer corner, lower lid (46, 47)
    outer lips  48-59   corner 48, upper (49-53, top centre 51), corner 54, lower (55-59, 57 centre)
    inner lips  60-67   corner 60, upper (61-63), corner 64, lower (65-67, 66 centre)

Driving part maps: the 68 points are drawn as :data:`NUM_PARTS` = 8 soft
curves, one channel each (:data:`PARTS`): jaw, right brow, left brow, nose,
right eye, left eye, outer lips, inner lips.  Brows and eyes keep one channel
per side so that the network can tell them apart under yaw and so that a
horizontal flip is a channel permutation (:data:`PART_FLIP`), exactly as with
body joints.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np

NUM_LANDMARKS = 68
MISSING = -1

REGIONS: dict[str, tuple[int, int]] = {  # name -> (first, last) inclusive
    "jaw": (0, 16),
    "right_brow": (17, 21),
    "left_brow": (22, 26),
    "nose_bridge": (27, 30),
    "lower_nose": (31, 35),
    "right_eye": (36, 41),
    "left_eye": (42, 47),
    "outer_lips": (48, 59),
    "inner_lips": (60, 67),
}


def _region_names() -> tuple[str, ...]:
    names: list[str] = []
    for region, (a, b) in REGIONS.items():
        names += [f"{region}_{i - a}" for i in range(a, b + 1)]
    return tuple(names)


LANDMARK_NAMES: tuple[str, ...] = _region_names()
assert len(LANDMARK_NAMES) == NUM_LANDMARKS


def region(name: str) -> np.ndarray:
    """Indices of one region of :data:`REGIONS`."""
    a, b = REGIONS[name]
    return np.arange(a, b + 1)


# Points swapped by a horizontal flip (right <-> left); points on the midline
# (8, 27-30, 33, 51, 57, 62, 66) map to themselves.
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    *((i, 16 - i) for i in range(8)),  # jaw
    *((17 + i, 26 - i) for i in range(5)),  # brows
    (31, 35),
    (32, 34),  # lower nose
    (36, 45),
    (37, 44),
    (38, 43),
    (39, 42),
    (40, 47),
    (41, 46),  # eyes
    (48, 54),
    (49, 53),
    (50, 52),
    (55, 59),
    (56, 58),  # outer lips
    (60, 64),
    (61, 63),
    (65, 67),  # inner lips
)


def flip_permutation() -> np.ndarray:
    """Index array ``p`` such that ``flipped[i] = original[p[i]]`` swaps left and right."""
    perm = np.arange(NUM_LANDMARKS)
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Mirror (x -> width-1-x) and re-index so that the result is again in iBUG order."""
    lm = np.asarray(landmarks, np.float32)
    out = lm[flip_permutation()].copy()
    vis = visible(out)
    out[vis, 0] = width - 1 - out[vis, 0]
    return out


def visible(landmarks: np.ndarray) -> np.ndarray:
    """Boolean mask [68] of points that are present (neither coordinate is -1)."""
    lm = np.asarray(landmarks)
    return (lm[:, 0] != MISSING) & (lm[:, 1] != MISSING)


@dataclass(frozen=True)
class Part:
    """One driving channel: polylines (index sequences) drawn into the same map."""

    name: str
    curves: tuple[tuple[int, ...], ...]
    closed: bool  # close every curve of the part (eyes, lips)


def _seq(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b + 1))


PARTS: tuple[Part, ...] = (
    Part("jaw", (_seq(0, 16),), closed=False),
    Part("right_brow", (_seq(17, 21),), closed=False),
    Part("left_brow", (_seq(22, 26),), closed=False),
    # bridge and the nostril base as two strokes; the tip (30) joins the base at 33
    Part("nose", (_seq(27, 30), _seq(31, 35), (30, 33)), closed=False),
    Part("right_eye", (_seq(36, 41),), closed=True),
    Part("left_eye", (_seq(42, 47),), closed=True),
    Part("outer_lips", (_seq(48, 59),), closed=True),
    Part("inner_lips", (_seq(60, 67),), closed=True),
)
NUM_PARTS = len(PARTS)
PART_NAMES: tuple[str, ...] = tuple(p.name for p in PARTS)
# Channel permutation of a horizontal flip: flipped[c] = original[PART_FLIP[c]].
PART_FLIP: tuple[int, ...] = (0, 2, 1, 3, 5, 4, 6, 7)


def part_segments(part: Part) -> list[tuple[int, int]]:
    """The (i, j) landmark index pairs that make up one part's strokes."""
    segs: list[tuple[int, int]] = []
    for curve in part.curves:
        segs += list(itertools.pairwise(curve))
        if part.closed and len(curve) > 2:
            segs.append((curve[-1], curve[0]))
    return segs


_SEGMENTS: tuple[np.ndarray, ...] = tuple(np.asarray(part_segments(p), np.int64) for p in PARTS)


def render_part_maps(landmarks: np.ndarray, height: int, width: int, sigma: float = 1.0) -> np.ndarray:
    """float32 [NUM_PARTS, H, W]: each part as a soft curve, ``exp(-d² / 2σ²)`` of the distance
    ``d`` from a pixel centre to the part's polyline, so the map is 1 on the curve and
    antialiased by construction (sub-pixel positions shift the profile, not a rasterised line).

    A segment is drawn only when both of its end points are present; a part with no
    drawable segment is all zero (e.g. the far half of the jaw under strong yaw keeps
    only its visible segments, a fully hidden eye gives an empty channel).
    Work is limited to each part's bounding box grown by 4σ, so the cost scales with
    the face, not the frame (beyond it values would be below exp(-8) ≈ 3e-4, a tenth of
    one uint8 level; they are left at 0).
    """
    if sigma <= 0:
        raise ValueError(f"part map sigma must be > 0, got {sigma}")
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected landmarks of shape (68, 2), got {lm.shape}")
    vis = visible(lm)
    out = np.zeros((NUM_PARTS, height, width), np.float32)
    pad = 4.0 * sigma
    inv = -0.5 / (sigma * sigma)
    for c, segs in enumerate(_SEGMENTS):
        segs = segs[vis[segs[:, 0]] & vis[segs[:, 1]]]
        if len(segs) == 0:
            continue
        a, b = lm[segs[:, 0]], lm[segs[:, 1]]
        pts = np.concatenate([a, b])
        x0 = max(int(np.floor(pts[:, 0].min() - pad)), 0)
        x1 = min(int(np.ceil(pts[:, 0].max() + pad)) + 1, width)
        y0 = max(int(np.floor(pts[:, 1].min() - pad)), 0)
        y1 = min(int(np.ceil(pts[:, 1].max() + pad)) + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        px = np.arange(x0, x1, dtype=np.float64)[None, None, :]
        py = np.arange(y0, y1, dtype=np.float64)[None, :, None]
        d = b - a  # [S, 2]
        len2 = np.maximum((d * d).sum(1), 1e-12)[:, None, None]
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        dx, dy = d[:, 0, None, None], d[:, 1, None, None]
        # Projection parameter of each pixel onto each segment, clamped to the segment.
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / len2, 0.0, 1.0)
        dist2 = ((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2).min(axis=0)
        out[c, y0:y1, x0:x1] = np.exp(dist2 * inv)
    return out


def flip_part_maps(maps: np.ndarray) -> np.ndarray:
    """Mirror [P, H, W] part maps left-right and swap the sided channels."""
    return np.ascontiguousarray(np.asarray(maps)[list(PART_FLIP), :, ::-1])


def landmark_face_box(
    landmarks: np.ndarray, image_size: tuple[int, int], margin: float = 0.15
) -> tuple[float, float, float, float] | None:
    """Square (x0, y0, x1, y1) around the visible landmarks grown by ``margin`` of its side,
    clipped to the image; None when fewer than 3 points are visible."""
    lm = np.asarray(landmarks, np.float64)
    pts = lm[visible(lm)]
    if len(pts) < 3:
        return None
    (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
    side = max(xb - xa, yb - ya) * (1.0 + 2.0 * margin)
    cx, cy = (xa + xb) / 2.0, (ya + yb) / 2.0
    h, w = image_size
    return (
        max(cx - side / 2, 0.0),
        max(cy - side / 2, 0.0),
        min(cx + side / 2, w - 1.0),
        min(cy + side / 2, h - 1.0),
    )


def quantise_landmarks(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """int64 [68, 2] (x, y) rounded to the nearest pixel; points that are missing or whose
    pixel falls outside the frame become -1 (a -1 coordinate must never mean 'just left
    of the border')."""
    h, w = image_size
    lm = np.asarray(landmarks, np.float64)
    out = np.rint(lm).astype(np.int64)
    bad = ~visible(lm) | (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 0] > w - 1) | (out[:, 1] > h - 1)
    out[bad] = MISSING
    return out


def encode_row(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[str, str]:
    """(landmarks_y, landmarks_x) CSV cells: JSON lists of 68 ints, y first, -1 missing."""
    q = quantise_landmarks(landmarks, image_size)
    return json.dumps(q[:, 1].tolist()), json.dumps(q[:, 0].tolist())


def decode_row(y_cell: str, x_cell: str) -> np.ndarray:
    """Parse the two CSV cells back into float32 [68, 2] (x, y); raises ValueError on a bad cell."""
    ys, xs = json.loads(y_cell), json.loads(x_cell)
    if (
        not (isinstance(ys, list) and isinstance(xs, list))
        or len(ys) != NUM_LANDMARKS
        or len(xs) != NUM_LANDMARKS
    ):
        raise ValueError(f"expected two JSON lists of {NUM_LANDMARKS} numbers")
    lm = np.stack([np.asarray(xs, np.float32), np.asarray(ys, np.float32)], axis=1)
    lm[~visible(lm)] = MISSING
    return lm
