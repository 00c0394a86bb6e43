"""Reading what users hand the apps: images, keypoint/landmark JSON files and field-format CSV rows.

One implementation for body keypoints (pose transfer) and facial landmarks (portrait editing); the
:class:`PointFormat` says which, so every error names the file, the row and what was expected.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class InputError(ValueError):
    """A user input the apps cannot use; the message names the file or option and why."""


@dataclass(frozen=True)
class PointFormat:
    what: str  # "keypoints" or "landmarks": the JSON key and the word in messages
    count: int
    order: str  # e.g. "OpenPose-18 order"
    csv_format: str  # what the CSV layout is called in messages


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image file (alpha dropped, grey expanded)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    data = np.fromfile(str(p), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InputError(f"{p}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise InputError(f"{path}: cannot write (use a .png or .jpg name)")
    return path


def check_points(points: np.ndarray, where: str, fmt: PointFormat) -> np.ndarray:
    """float32 [count, 2] (x, y), negative coordinates marked missing (-1)."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"{where}: expected a list of [x, y] pairs, got shape {points.shape}")
    if len(points) != fmt.count:
        raise InputError(f"{where}: expected {fmt.count} {fmt.what} ({fmt.order}), found {len(points)}")
    if not np.isfinite(points).all():
        raise InputError(f"{where}: {fmt.what} must be finite numbers (-1 marks a missing point)")
    out = points.astype(np.float32)
    out[(out[:, 0] < 0) | (out[:, 1] < 0)] = -1
    return out


def read_points_json(path: Path, fmt: PointFormat) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Points (x, y) of a JSON file (a list of [x, y], or an object with them under ``fmt.what`` and an
    optional ``size`` [H, W]) and the frame they refer to, if the file says."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    frame = None
    if isinstance(doc, dict):
        if fmt.what not in doc:
            raise InputError(f"{path}: expected a list of [x, y] or an object with '{fmt.what}'")
        if doc.get("size") is not None:
            frame = (int(doc["size"][0]), int(doc["size"][1]))
        doc = doc[fmt.what]
    try:
        points = np.asarray(doc, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {fmt.what} must be numbers [[x, y], ...]") from None
    return check_points(points, str(path), fmt), frame


def read_csv_points(path: Path, name: str | None, fmt: PointFormat) -> np.ndarray:
    """Points (x, y) of one row of a field-format CSV (``name:<what>_y:<what>_x``, JSON lists, y first);
    ``name`` None takes the only row."""
    ycol, xcol = f"{fmt.what}_y", f"{fmt.what}_x"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=":"))
    if not rows or not {"name", ycol, xcol} <= set(rows[0]):
        raise InputError(f"{path}: expected the {fmt.csv_format} format name:{ycol}:{xcol}")
    found = [r for r in rows if r["name"] == name] if name else rows
    if not found:
        raise InputError(f"{path}: no row named {name!r}")
    if len(found) > 1:
        raise InputError(f"{path}: {len(found)} rows; pick one with {path}#IMAGE_NAME")
    row = found[0]
    try:
        ys, xs = json.loads(row[ycol]), json.loads(row[xcol])
    except json.JSONDecodeError:
        raise InputError(f"{path}: row {row['name']!r} has a cell that is not a JSON list") from None
    if len(ys) != len(xs):
        raise InputError(f"{path}: row {row['name']!r} has {len(ys)} y values but {len(xs)} x values")
    points = (
        np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], axis=1) if ys else np.zeros((0, 2))
    )
    return check_points(points, f"{path}#{row['name']}", fmt)
