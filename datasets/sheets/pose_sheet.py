"""Pose sheets: a grid of person images with their OpenPose-18 skeletons drawn.

:func:`pose_sheet` draws rows of (image, keypoints, caption) cells; :func:`pick_pose_rows`
reads such rows back from a raw dataset in a body layout (``pipelines.synthesize`` shows the
identities it generated this way).  :mod:`datasets.sheets.shard_sheet` draws the shard samples.
Keypoints are float or int [18, 2] (x, y) in the image's pixels, -1 missing; only
limbs with both ends present are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datasets.pose.keypoints import LIMBS, visible
from datasets.raw.layout import get_layout, identity_of, read_annotations

# The customary OpenPose joint colours (RGB), one per joint; a limb takes its end joint's.
JOINT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)

Cell = tuple[np.ndarray, np.ndarray, str]


def draw_skeleton(
    image: np.ndarray, keypoints: np.ndarray, scale: int = 1, alpha: float = 0.75
) -> np.ndarray:
    """``image`` (uint8 RGB) enlarged ``scale`` times with limbs and joints blended over it."""
    big = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    overlay = big.copy()
    kp = np.asarray(keypoints, np.float64)
    ok = visible(kp)
    pts = (kp + 0.5) * scale - 0.5  # pixel centres stay pixel centres after enlarging
    thick = max(1, scale // 2 + 1)
    for a, b in LIMBS:
        if ok[a] and ok[b]:
            cv2.line(overlay, _pt(pts[a]), _pt(pts[b]), JOINT_COLORS[b], thick, cv2.LINE_AA, shift=4)
    for j in np.flatnonzero(ok):
        cv2.circle(overlay, _pt(pts[j]), thick + 1, JOINT_COLORS[j], -1, cv2.LINE_AA, shift=4)
    return cv2.addWeighted(overlay, alpha, big, 1.0 - alpha, 0.0)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(p[0] * 16), round(p[1] * 16)  # 4 fractional bits for cv2's shift


def pose_sheet(
    rows: Sequence[Sequence[Cell]],
    scale: int = 2,
    with_plain: bool = True,
    pad: int = 6,
    caption_h: int = 14,
    background: int = 255,
) -> np.ndarray:
    """A grid: one row per entry of ``rows``; each cell the image (if ``with_plain``) and its skeleton."""
    if not rows or not any(rows):
        raise ValueError("pose_sheet needs at least one cell")
    h = max(c[0].shape[0] for r in rows for c in r) * scale
    w = max(c[0].shape[1] for r in rows for c in r) * scale
    cell_w = w * (2 if with_plain else 1) + (pad // 2 if with_plain else 0)
    ncols = max(len(r) for r in rows)
    sheet_h = pad + len(rows) * (h + caption_h + pad)
    sheet_w = pad + ncols * (cell_w + pad)
    sheet = np.full((sheet_h, sheet_w, 3), background, np.uint8)
    for i, row in enumerate(rows):
        y = pad + i * (h + caption_h + pad)
        for j, (image, kp, caption) in enumerate(row):
            x = pad + j * (cell_w + pad)
            tiles = []
            if with_plain:
                tiles.append(
                    cv2.resize(
                        image,
                        (image.shape[1] * scale, image.shape[0] * scale),
                        interpolation=cv2.INTER_NEAREST,
                    )
                )
            tiles.append(draw_skeleton(image, kp, scale))
            xx = x
            for tile in tiles:
                sheet[y : y + tile.shape[0], xx : xx + tile.shape[1]] = tile
                xx += tile.shape[1] + pad // 2
            cv2.putText(
                sheet,
                caption[: max(4, cell_w // 6)],
                (x, y + h + caption_h - 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (40, 40, 40),
                1,
                cv2.LINE_AA,
            )
    return sheet


def pick_pose_rows(root: Path, prefix: str, layout: str, identities: int) -> list[list[Cell]]:
    """One row of (image, keypoints, caption) cells per identity of the raw dataset under ``root``:
    the first ``identities - identities // 3`` train identities, then (at least one) test ones,
    each with all its views in CSV order."""
    spec = get_layout(layout)
    rows: list[list[Cell]] = []
    n_test = max(1, identities // 3)
    for split, limit in (("train", identities - n_test), ("test", n_test)):
        annotations, _issues = read_annotations(root / f"{prefix}-annotation-{split}.csv", spec)
        groups: dict[str, list[Cell]] = {}
        for row in annotations:
            key = identity_of(row.name, spec)
            if key not in groups and len(groups) == limit:
                continue
            image = np.asarray(Image.open(root / split / row.name).convert("RGB"))
            groups.setdefault(key, []).append((image, row.keypoints, f"{split} {Path(row.name).stem}"))
        rows += list(groups.values())
    return rows


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", optimize=True)
    return path
