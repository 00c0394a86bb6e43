"""The contact sheet of shard samples (:func:`shard_sheet`): image with face box, heatmap overlay, face crop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from datasets import storage
from datasets.files import atomic_write_bytes
from datasets.pose import heatmaps
from datasets.pose.keypoints import LIMBS, MISSING, NUM_JOINTS
from datasets.shards.samples import decode_image, parse_sample
from datasets.shards.tar import iter_samples


def _tile(view, size: tuple[int, int]) -> np.ndarray:
    """One row cell: [image + skeleton + face box | heatmap overlay | face crop (scaled)]."""
    h, w = size
    rgb = decode_image(view.jpeg, view.name, size)
    drawn = rgb.copy()
    kp = view.keypoints
    if len(kp) == NUM_JOINTS:
        for a, b in LIMBS:
            if min(kp[a].min(), kp[b].min()) != MISSING:
                cv2.line(
                    drawn,
                    tuple(round(v) for v in kp[a]),
                    tuple(round(v) for v in kp[b]),
                    (255, 255, 0),
                    1,
                    cv2.LINE_AA,
                )
    else:  # portrait landmarks: no skeleton, one dot per present point
        for x, y in kp:
            if x != MISSING and y != MISSING:
                drawn[round(y), round(x)] = (255, 255, 0)
    if view.face_valid:
        x0, y0, x1, y1 = (round(v) for v in view.face_box)
        cv2.rectangle(drawn, (x0, y0), (x1 - 1, y1 - 1), (255, 0, 0), 1)
    dense = heatmaps.to_dense(heatmaps.decode(bytes(view.pose))).max(axis=0)
    colour = cv2.cvtColor(cv2.applyColorMap(dense, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    alpha = (dense.astype(np.float32) / 255.0)[..., None]
    overlay = (rgb * (1 - 0.7 * alpha) + colour * (0.7 * alpha)).astype(np.uint8)
    face = decode_image(view.face_jpeg, view.name)
    face = cv2.resize(face, (w // 2, w // 2), interpolation=cv2.INTER_NEAREST)
    face_cell = np.full((h, w // 2, 3), 32, np.uint8)
    face_cell[: face.shape[0]] = face
    if not view.face_valid:
        cv2.putText(face_cell, "none", (2, face.shape[0] + 14), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 80, 80), 1)
    return np.concatenate([drawn, overlay, face_cell], axis=1)


def shard_sheet(
    shard_paths: Sequence[Path | str],
    out_path: Path,
    image_size: tuple[int, int],
    rows: int = 4,
    cols: int = 3,
) -> Path:
    """Draw the first ``rows·cols`` views of the given shards (paths or URLs) into a PNG (written atomically)."""
    cells = []
    for path in shard_paths:
        for key, files in iter_samples(storage.read_bytes(path)):
            sample = parse_sample(key, files)
            for view in sample.views:
                cells.append(_tile(view, image_size))
                if len(cells) == rows * cols:
                    break
            if len(cells) == rows * cols:
                break
        if len(cells) == rows * cols:
            break
    if not cells:
        raise ValueError("contact sheet: no samples in the given shards")
    blank = np.zeros_like(cells[0])
    cells += [blank] * (rows * cols - len(cells))
    pad = 4
    padded = [np.pad(c, ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for c in cells]
    grid = np.concatenate(
        [np.concatenate(padded[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0
    )
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("cv2.imencode(.png) failed")
    atomic_write_bytes(out_path, png.tobytes())
    return out_path
