"""Portrait sheets: face images with their 68 landmarks drawn, and their part maps.

:func:`landmark_sheet` is the contact sheet of a portrait dataset (rows of
identities, columns of views); :func:`parts_sheet` shows, per view, the image,
the part maps blended over it, and each of the :data:`~datasets.pose.landmarks.NUM_PARTS`
channels on its own.  Landmarks are float or int [68, 2] (x, y), -1 missing.

The cells are read back from a folder in the portrait layout - the JPEGs and the
integer landmarks of the CSV - by :func:`read_portrait_split` / :func:`pick_portrait_rows`,
so the pictures show exactly what the preprocess stage will read;
:func:`pick_part_cells` chooses a varied handful of them for :func:`parts_sheet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datasets.pose.landmarks import MISSING, PART_NAMES, REGIONS, render_part_maps, visible
from datasets.raw.layout import get_layout, identity_of, read_annotations
from datasets.sheets.pose_sheet import Cell

# One colour per region (RGB), and per part channel for the blended maps.
REGION_COLOURS: dict[str, tuple[int, int, int]] = {
    "jaw": (255, 230, 0),
    "right_brow": (255, 140, 0),
    "left_brow": (255, 140, 0),
    "nose_bridge": (0, 230, 255),
    "lower_nose": (0, 230, 255),
    "right_eye": (0, 255, 90),
    "left_eye": (0, 255, 90),
    "outer_lips": (255, 40, 90),
    "inner_lips": (255, 120, 255),
}
PART_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 230, 0),
    (255, 140, 0),
    (255, 70, 0),
    (0, 230, 255),
    (0, 255, 90),
    (40, 160, 255),
    (255, 40, 90),
    (255, 120, 255),
)


def _enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(
        image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST
    )


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, scale: int = 3) -> np.ndarray:
    """``image`` enlarged ``scale`` times with each present landmark as a dot coloured by region."""
    big = _enlarge(image, scale)
    lm = np.asarray(landmarks, np.float64)
    ok = visible(lm)
    pts = (lm + 0.5) * scale - 0.5  # pixel centres stay pixel centres after enlarging
    radius = max(1.0, scale / 2.5)
    for name, (a, b) in REGIONS.items():
        for i in range(a, b + 1):
            if ok[i]:
                centre = (round(pts[i, 0] * 16), round(pts[i, 1] * 16))
                cv2.circle(big, centre, round(radius * 16), REGION_COLOURS[name], -1, cv2.LINE_AA, shift=4)
    return big


def _grid(
    cells: Sequence[Sequence[np.ndarray]],
    captions: Sequence[Sequence[str]],
    pad: int = 6,
    caption_h: int = 14,
    background: int = 255,
) -> np.ndarray:
    h = max(c.shape[0] for row in cells for c in row)
    ncols = max(len(row) for row in cells)
    widths = [max(row[j].shape[1] for row in cells if j < len(row)) for j in range(ncols)]
    sheet = np.full(
        (pad + len(cells) * (h + caption_h + pad), pad + sum(w + pad for w in widths), 3),
        background,
        np.uint8,
    )
    for i, row in enumerate(cells):
        y = pad + i * (h + caption_h + pad)
        x = pad
        for j, cell in enumerate(row):
            sheet[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
            text = captions[i][j] if j < len(captions[i]) else ""
            cv2.putText(
                sheet,
                text,
                (x, y + h + caption_h - 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (40, 40, 40),
                1,
                cv2.LINE_AA,
            )
            x += widths[j] + pad
    return sheet


def landmark_sheet(rows: Sequence[Sequence[Cell]], scale: int = 3) -> np.ndarray:
    """Rows of (image, landmarks, caption) cells; each cell shows the plain image and the landmarks."""
    if not rows or not any(rows):
        raise ValueError("landmark_sheet needs at least one cell")
    cells, captions = [], []
    for row in rows:
        r, c = [], []
        for image, lm, caption in row:
            plain = _enlarge(image, scale)
            drawn = draw_landmarks(image, lm, scale)
            gap = np.full((plain.shape[0], 2, 3), 255, np.uint8)
            r.append(np.concatenate([plain, gap, drawn], axis=1))
            c.append(caption)
        cells.append(r)
        captions.append(c)
    return _grid(cells, captions)


def blend_parts(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """The image darkened, with every part channel added in its own colour."""
    colours = np.asarray(PART_COLOURS, np.float32)[: len(maps)]
    layer = np.einsum("phw,pc->hwc", maps.astype(np.float32), colours)
    alpha = np.clip(maps.max(axis=0), 0, 1)[..., None]
    out = image.astype(np.float32) * (1 - 0.8 * alpha) * 0.6 + layer * 0.9
    return np.clip(out, 0, 255).astype(np.uint8)


def parts_sheet(cells: Sequence[Cell], sigma: float, scale: int = 3) -> np.ndarray:
    """Per (image, landmarks, caption): image | maps blended over it | each part channel alone."""
    if not cells:
        raise ValueError("parts_sheet needs at least one cell")
    rows, captions = [], []
    for image, lm, caption in cells:
        h, w = image.shape[:2]
        maps = render_part_maps(lm, h, w, sigma)
        row = [draw_landmarks(image, lm, scale), _enlarge(blend_parts(image, maps), scale)]
        for p in range(len(maps)):
            grey = (maps[p] * 255 + 0.5).astype(np.uint8)
            tinted = grey[..., None].astype(np.float32) / 255.0 * np.asarray(PART_COLOURS[p], np.float32)
            row.append(_enlarge(tinted.astype(np.uint8), scale))
        rows.append(row)
        captions.append([caption, f"{len(maps)} part maps, sigma {sigma:g}", *PART_NAMES])
    return _grid(rows, captions)


def read_portrait_split(root: Path, prefix: str, split: str) -> dict[str, list[Cell]]:
    """Identity -> [(image, landmarks, caption)] for one split of a portrait-layout folder."""
    layout = get_layout("portrait")
    rows, _issues = read_annotations(root / f"{prefix}-landmarks-{split}.csv", layout)
    groups: dict[str, list[Cell]] = {}
    for row in rows:
        image = np.asarray(Image.open(root / split / row.name).convert("RGB"))
        lm = row.keypoints.copy()
        lm[~visible(lm)] = MISSING
        hidden = int((lm[:, 0] < 0).sum())
        caption = f"{split} {Path(row.name).stem[-10:]}" + (f" ({hidden} hidden)" if hidden else "")
        groups.setdefault(identity_of(row.name, layout), []).append((image, lm, caption))
    return groups


def pick_portrait_rows(root: Path, prefix: str, identities: int, views: int) -> list[list[Cell]]:
    """Up to ``views`` cells of the first ``identities - identities // 3`` train identities, then of
    (at least one) test identities."""
    n_test = max(1, identities // 3)
    rows = []
    for split, count in (("train", identities - n_test), ("test", n_test)):
        groups = read_portrait_split(root, prefix, split)
        rows += [cells[:views] for cells in list(groups.values())[:count]]
    return rows


def pick_part_cells(rows: Sequence[Sequence[Cell]], count: int = 5) -> list[Cell]:
    """A varied handful for the part-map sheet: the most different expressions/poses first."""
    cells = [c for row in rows for c in row]

    # Spread by lip gap and hidden-point count so open mouths, closed eyes and yaw all show.
    def key(cell: Cell):
        lm = cell[1]
        gap = lm[66, 1] - lm[62, 1] if lm[66, 1] >= 0 and lm[62, 1] >= 0 else 0
        eye = lm[41, 1] - lm[37, 1] if lm[41, 1] >= 0 and lm[37, 1] >= 0 else 0
        return (gap, -eye, (lm[:, 0] < 0).sum())

    ranked = sorted(cells, key=key)
    idx = np.linspace(0, len(ranked) - 1, count).round().astype(int)
    return [ranked[i] for i in idx]
