"""Backgrounds for the synthetic person images: studio plain, studio gradient, street clutter.

All return float32 RGB in [0, 1] of shape (h, w, 3) and draw only from the ``rng``
they are given, so a seed fixes every pixel.  Sizes are the supersampled canvas
size; shapes are drawn with OpenCV's antialiased primitives.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

BackgroundKind = Literal["plain", "gradient", "clutter"]


def _light_tone(rng: np.random.Generator) -> np.ndarray:
    """A pale studio colour: near white with a slight tint."""
    return np.clip(0.86 + rng.uniform(-0.07, 0.08) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)


def plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.broadcast_to(_light_tone(rng).astype(np.float32), (h, w, 3)).copy()


def gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A vertical studio sweep: one tone on top, a darker floor tone below a soft horizon."""
    top = _light_tone(rng)
    floor = np.clip(top * rng.uniform(0.72, 0.9) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0)
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    horizon = rng.uniform(0.68, 0.82)
    t = 1.0 / (1.0 + np.exp(-(y - horizon) / 0.06))  # soft wall-to-floor transition
    tilt = rng.uniform(-0.06, 0.06) * np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    img = top[None, None, :] * (1 - t[..., None]) + floor[None, None, :] * t[..., None]
    return np.clip(img + tilt[..., None], 0.0, 1.0).astype(np.float32)


def _muted(rng: np.random.Generator, lo: float = 0.12, hi: float = 0.8, tint: float = 0.1) -> tuple:
    """A street colour: mostly grey-brown, with an occasional saturated sign or shop front."""
    if rng.random() < 0.15:
        return tuple(float(c) for c in rng.uniform(0.1, 0.9, 3))
    base = rng.uniform(lo, hi)
    return tuple(float(c) for c in np.clip(base + rng.uniform(-tint, tint, 3), 0.0, 1.0))


def clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like scene: wall with windows and signs, pavement, poles and passers-by blobs."""
    wall = np.array(_muted(rng, 0.3, 0.75, 0.08))
    ground = np.array(_muted(rng, 0.3, 0.55, 0.04))
    horizon = int(h * rng.uniform(0.55, 0.75))
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = wall
    img[horizon:] = ground
    for _ in range(int(rng.integers(6, 14))):  # windows, doors, signs, parked things
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 8, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 14, h // 3))
        color = _muted(rng)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):  # poles and kerbs
        x = int(rng.integers(0, w))
        color = _muted(rng, 0.1, 0.5, 0.03)
        cv2.line(
            img,
            (x, 0),
            (x + int(rng.integers(-w // 8, w // 8)), h),
            color,
            int(rng.integers(1, max(2, w // 20))),
            cv2.LINE_AA,
        )
    for _ in range(int(rng.integers(1, 4))):  # round things: lamps, bins, bushes
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        color = _muted(rng)
        cv2.circle(img, c, int(rng.integers(h // 40 + 1, h // 8)), color, -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # half-visible passers-by at the frame edges
        x = int(rng.choice([rng.integers(-w // 6, w // 6), rng.integers(5 * w // 6, 7 * w // 6)]))
        y = int(rng.integers(h // 6, h // 2))
        color = _muted(rng, 0.05, 0.7, 0.2)
        cv2.ellipse(img, (x, y + h // 4), (w // 7, h // 4), 0, 0, 360, color, -1, cv2.LINE_AA)
    k = max(3, (min(h, w) // 40) | 1)  # out of focus behind the person
    blurred = cv2.GaussianBlur(img, (k, k), 0)
    return np.clip(blurred, 0.0, 1.0)


def make_background(kind: BackgroundKind, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    makers = {"plain": plain, "gradient": gradient, "clutter": clutter}
    return makers[kind](rng, h, w)


def ground_shadow(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
    """Darken a soft ellipse under the feet, in place."""
    h, w = img.shape[:2]
    y0, y1 = max(int(cy - 3 * ry), 0), min(int(cy + 3 * ry) + 1, h)
    x0, x1 = max(int(cx - 2 * rx), 0), min(int(cx + 2 * rx) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    d2 = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
    img[y0:y1, x0:x1] *= (1.0 - strength * np.exp(-d2))[..., None]
