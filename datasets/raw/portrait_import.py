"""Import a real face set with 68-point landmarks into the portrait layout (docs/portrait.md).

The library part of ``python -m pipelines.convert_portraits`` (the flags are described
there): reading iBUG ``.pts`` files (:func:`read_pts`) and landmark CSVs
(:func:`read_csv_landmarks`), collecting the convertible images with their identities
(:func:`collect`), cropping around the landmarks (:func:`crop_and_resize`), the seeded
train/test split by identity (:func:`assign_splits`) and writing the layout
(:func:`convert`).  An input that cannot be converted raises :class:`ConvertError`
with the file and the problem; :func:`collect` lists those and skips them.

Written layout::

    ROOT/{train,test}/<identity>_<view>.jpg
    ROOT/portrait-landmarks-{train,test}.csv   name:landmarks_y:landmarks_x
    ROOT/portrait-pairs-{train,test}.csv       from,to  (all ordered pairs within an identity)
    ROOT/portrait-names.csv                    name,source

The folder is built under a hidden temporary name and renamed into place when complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from datasets.files import staged_dir
from datasets.pose.landmarks import MISSING, NUM_LANDMARKS, encode_row, visible

SOURCE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class ConvertError(ValueError):
    """An input that cannot be converted (the message names the file and the problem)."""


@dataclass(frozen=True)
class Item:
    source: Path
    identity: str
    view: str  # written as <identity>_<view>.jpg, so the layout's identity rule reads it back
    landmarks: np.ndarray  # float [68, 2] (x, y), 0-based pixels of the source image, -1 missing


def read_pts(path: Path, origin: int = 1) -> np.ndarray:
    """Landmarks [68, 2] from an iBUG ``.pts`` file; raises ConvertError on a bad file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"\{(.*)\}", text, re.DOTALL)
    if not match:
        raise ConvertError(f"{path}: not a .pts file (no {{ … }} block)")
    try:
        pts = np.array(
            [[float(v) for v in line.split()[:2]] for line in match.group(1).splitlines() if line.strip()]
        )
    except ValueError:
        raise ConvertError(f"{path}: a point line is not two numbers") from None
    declared = re.search(r"n_points:\s*(\d+)", text)
    if len(pts) != NUM_LANDMARKS or (declared and int(declared.group(1)) != NUM_LANDMARKS):
        note = (
            f" (header says n_points: {declared.group(1)})"
            if declared and int(declared.group(1)) != len(pts)
            else ""
        )
        raise ConvertError(f"{path}: expected {NUM_LANDMARKS} landmarks, found {len(pts)}{note}")
    out = pts - origin
    out[(pts[:, 0] < origin) | (pts[:, 1] < origin)] = MISSING
    return out


def read_csv_landmarks(path: Path) -> dict[str, np.ndarray]:
    """name -> landmarks [68, 2] from a CSV with name, x0..x67, y0..y67 columns."""
    frame = pd.read_csv(path)
    need = ["name"] + [f"x{i}" for i in range(NUM_LANDMARKS)] + [f"y{i}" for i in range(NUM_LANDMARKS)]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ConvertError(
            f"{path}: missing columns {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
            f"(expected name, x0..x{NUM_LANDMARKS - 1}, y0..y{NUM_LANDMARKS - 1})"
        )
    xs = frame[[f"x{i}" for i in range(NUM_LANDMARKS)]].to_numpy(np.float64)
    ys = frame[[f"y{i}" for i in range(NUM_LANDMARKS)]].to_numpy(np.float64)
    out = {}
    for name, x, y in zip(frame["name"].astype(str), xs, ys):
        lm = np.stack([x, y], 1)
        lm[~np.isfinite(lm).all(1) | (lm < 0).any(1)] = MISSING
        out[name] = lm
    return out


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", text).strip("-") or "x"


def identity_and_view(path: Path, rule: str) -> tuple[str, str]:
    """(identity, view) of an image; the written name is ``<identity>_<view>.jpg``."""
    stem = path.stem
    if rule == "stem" and "_" in stem:
        ident, view = stem.rsplit("_", 1)
        return _clean(ident), _clean(view)
    ident = path.parent.name if rule == "dir" else stem
    return _clean(ident), _clean(stem.replace("_", "-"))


def collect(
    images: Path, pts: bool, csv: Path | None, rule: str, origin: int
) -> tuple[list[Item], list[str]]:
    """The convertible items and a list of 'file: problem' lines for everything skipped."""
    items, problems = [], []
    table = read_csv_landmarks(csv) if csv is not None else None
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in SOURCE_IMAGE_SUFFIXES and p.is_file())
    for path in files:
        rel = path.relative_to(images).as_posix()
        try:
            if table is not None:
                if rel not in table:
                    raise ConvertError(f"{rel}: no row in {csv}")
                lm = table[rel]
            else:
                pts_path = path.with_suffix(".pts")
                if not pts_path.is_file():
                    raise ConvertError(f"{rel}: no landmark file {pts_path.name}")
                lm = read_pts(pts_path, origin)
            if visible(lm).sum() < 3:
                raise ConvertError(f"{rel}: fewer than 3 landmarks present")
            items.append(Item(path, *identity_and_view(path, rule), lm))
        except ConvertError as exc:
            problems.append(str(exc))
    return items, problems


def crop_and_resize(
    image: np.ndarray, lm: np.ndarray, size: tuple[int, int], crop: str, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """The output image and its landmarks (x, y) in the output frame.

    Pixel centres sit at integer coordinates and pixel i covers [i - 0.5, i + 0.5], so
    a source region whose left/top edge is at (ex, ey) and whose side is ``side``
    maps as ``out = (in - edge) · S / side - 0.5``, for the image and the landmarks alike.
    """
    h, w = image.shape[:2]
    if crop == "face":
        pts = lm[visible(lm)]
        (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
        side_w = side_h = max(round(max(xb - xa, yb - ya) * (1.0 + 2.0 * margin)), 1)
        ex, ey = (xa + xb) / 2.0 - side_w / 2.0, (ya + yb) / 2.0 - side_h / 2.0
        # Cut the region at native resolution (sub-pixel shift), padding with the edge colour.
        shift = np.array([[1.0, 0.0, -ex - 0.5], [0.0, 1.0, -ey - 0.5]])
        region = cv2.warpAffine(
            image, shift, (side_w, side_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    else:
        side_w, side_h, ex, ey, region = w, h, -0.5, -0.5, image
    oh, ow = size
    interp = cv2.INTER_AREA if ow < side_w and oh < side_h else cv2.INTER_LINEAR
    out = cv2.resize(region, (ow, oh), interpolation=interp)
    new = np.array(lm, np.float64, copy=True)
    ok = visible(lm)
    new[ok, 0] = (lm[ok, 0] - ex) * (ow / side_w) - 0.5
    new[ok, 1] = (lm[ok, 1] - ey) * (oh / side_h) - 0.5
    return out, new


def assign_splits(identities: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Identity -> "train" or "test" by a seeded shuffle (at least one test identity when asked for any)."""
    ids = sorted(set(identities))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = round(test_fraction * len(ids))
    if 0 < test_fraction and n_test == 0 and len(ids) > 1:
        n_test = 1
    test = {ids[i] for i in order[:n_test]}
    return {i: ("test" if i in test else "train") for i in ids}


def convert(
    items: list[Item],
    out: Path,
    size: tuple[int, int],
    crop: str,
    margin: float,
    test_fraction: float,
    seed: int,
    quality: int = 95,
) -> dict[str, int]:
    """Write the layout to ``out`` atomically; returns images per split."""
    splits = assign_splits([it.identity for it in items], test_fraction, seed)
    with staged_dir(out) as tmp:
        rows = {"train": ["name:landmarks_y:landmarks_x"], "test": ["name:landmarks_y:landmarks_x"]}
        names: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
        sources = ["name,source"]
        for split in rows:
            (tmp / split).mkdir(parents=True)
        used: set[str] = set()
        for it in items:
            split = splits[it.identity]
            name, k = f"{it.identity}_{it.view}.jpg", 1
            while name in used:  # same identity and view from two folders
                name, k = f"{it.identity}_{it.view}-{k}.jpg", k + 1
            used.add(name)
            image = np.asarray(Image.open(it.source).convert("RGB"))
            img, lm = crop_and_resize(image, it.landmarks, size, crop, margin)
            Image.fromarray(img).save(tmp / split / name, format="JPEG", quality=quality, subsampling=0)
            ys, xs = encode_row(lm, size)
            rows[split].append(f"{name}:{ys}:{xs}")
            names[split].setdefault(it.identity, []).append(name)
            sources.append(f"{name},{it.source.as_posix()}")
        for split, lines in rows.items():
            (tmp / f"portrait-landmarks-{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            pairs = ["from,to"] + [
                f"{a},{b}" for group in names[split].values() for a in group for b in group if a != b
            ]
            (tmp / f"portrait-pairs-{split}.csv").write_text("\n".join(pairs) + "\n", encoding="utf-8")
        (tmp / "portrait-names.csv").write_text("\n".join(sources) + "\n", encoding="utf-8")
    return {s: len(r) - 1 for s, r in rows.items()}
