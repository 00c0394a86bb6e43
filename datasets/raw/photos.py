"""A folder of one's own photos → a dataset in the field's layout (``prepare --photos DIR``).

    DIR/<identity>/*.jpg|jpeg|png|webp     any sizes; EXIF orientation is applied

Each photo is searched for people by a detector (the pose extra's MediaPipe → OpenPose-18, passed
in by the command: this package never imports the pipelines).  A photo with exactly one person
and at least ``min_joints`` visible joints is cut around that person — the joints' box grown by
``margin`` of its height, widened or heightened to the frame's aspect, padded with the edge
pixels where it leaves the photo — and resized to the annotation frame; its keypoints are mapped
into that frame.  Identities are split train/test by a seeded shuffle; pairs are all ordered
pairs within an identity or a seeded sample of ``pairs_per_identity``.  Quarantined photos (no
person, several people, too few joints, unreadable) go to ``prepare-rejects.csv`` with the reason
and the detector's confidence; ``prepare-photos.csv`` lists every photo with its outcome.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from datasets.files import staged_dir
from datasets.pose.keypoints import MISSING, visible
from datasets.raw.frame import decode, encode_jpeg, to_rgb
from datasets.raw.layout import SPLITS
from datasets.raw.portrait_import import assign_splits
from datasets.raw.release_writer import (
    MANIFEST_FILE,
    REJECTS_FILE,
    canonical_json,
    check_replaceable,
    reason_key,
    write_lines,
    write_rejects,
)
from datasets.raw.releases import OUTPUT_PREFIX, PrepareReject
from datasets.specs import PhotosSpec

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
PHOTOS_FILE = "prepare-photos.csv"


class Person(Protocol):
    @property
    def keypoints(self) -> np.ndarray: ...  # [18, 2] (x, y) pixels, -1 missing

    @property
    def confidence(self) -> float: ...


Detector = Callable[[np.ndarray], Sequence[Person]]


@dataclass(frozen=True)
class Photo:
    identity: str  # the folder name, cleaned for file names
    source: str  # path relative to DIR


@dataclass
class PhotoResult:
    photo: Photo
    name: str = ""
    split: str = ""
    image: np.ndarray | None = None  # at the frame, RGB
    keypoints: np.ndarray | None = None  # in the frame
    reason: str = ""
    confidence: float = float("nan")
    joints: int = 0


def clean_identity(name: str) -> str:
    """A folder name usable in the layout's file names: letters, digits, '-' only (the layouts
    read an image's identity as the part before its last '_')."""
    out = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return out or "x"


def collect_photos(root: Path) -> tuple[list[Photo], list[PrepareReject]]:
    """Photos in identity folders (sorted), and rejects for image files outside any such folder."""
    photos, rejects = [], []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES or rel.parts[0].startswith("."):
            continue
        if len(rel.parts) != 2:
            rejects.append(
                PrepareReject(
                    "image",
                    "",
                    rel.as_posix(),
                    "",
                    "not in an identity folder: expected DIR/<identity>/<photo>",
                )
            )
            continue
        photos.append(Photo(clean_identity(rel.parts[0]), rel.as_posix()))
    return photos, rejects


def person_crop(
    image: np.ndarray, kp: np.ndarray, frame: tuple[int, int], margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """The frame-sized cut around the visible joints, and the keypoints in it (pixel centres kept)."""
    fh, fw = frame
    pts = kp[visible(kp)]
    (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
    pad = margin * max(yb - ya, 1.0)
    xa, xb, ya, yb = xa - pad, xb + pad, ya - pad, yb + pad
    bw, bh = xb - xa, yb - ya
    if bw / bh < fw / fh:  # too narrow: widen to the frame's aspect
        bw = bh * fw / fh
    else:
        bh = bw * fh / fw
    ex, ey = (xa + xb) / 2 - bw / 2, (ya + yb) / 2 - bh / 2
    sx, sy = fw / bw, fh / bh
    # Source edge (ex, ey) maps to the output edge: out = (in - edge) * scale - 0.5 in pixel centres.
    affine = np.array([[sx, 0.0, (0.5 - ex) * sx - 0.5], [0.0, sy, (0.5 - ey) * sy - 0.5]])
    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(image, affine, (fw, fh), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    mapped = np.full_like(kp, MISSING, dtype=np.float32)
    ok = visible(kp)
    mapped[ok, 0] = (kp[ok, 0] + 0.5 - ex) * sx - 0.5
    mapped[ok, 1] = (kp[ok, 1] + 0.5 - ey) * sy - 0.5
    inside = (
        ok & (mapped[:, 0] >= 0) & (mapped[:, 1] >= 0) & (mapped[:, 0] <= fw - 1) & (mapped[:, 1] <= fh - 1)
    )
    mapped[~inside] = MISSING
    return out, mapped


def examine(
    root: Path, photo: Photo, detect: Detector, frame: tuple[int, int], spec: PhotosSpec
) -> PhotoResult:
    """One photo: decoded, searched, and cut, or the reason it is quarantined."""
    res = PhotoResult(photo)
    img, _fmt, reason = decode((root / photo.source).read_bytes(), exif=True)
    if img is None:
        res.reason = reason
        return res
    rgb, note = to_rgb(img)
    if rgb is None:
        res.reason = note
        return res
    array = np.asarray(rgb, dtype=np.uint8)
    people = [p for p in detect(array) if p.confidence >= spec.min_confidence]
    confident = [p for p in people if p.confidence >= spec.second_person_confidence]
    if not people:
        res.reason = f"no person (none found at confidence >= min_confidence {spec.min_confidence})"
        return res
    res.confidence = float(people[0].confidence)
    res.joints = int(visible(people[0].keypoints).sum())
    if len(confident) > 1:
        res.reason = (
            f"several people: {len(confident)} found at confidence >= {spec.second_person_confidence} "
            f"({', '.join(f'{p.confidence:.2f}' for p in confident)})"
        )
    elif res.joints < spec.min_joints:
        res.reason = f"too few joints: {res.joints} visible < min_joints {spec.min_joints} (confidence {res.confidence:.2f})"
    else:
        res.image, res.keypoints = person_crop(
            array, np.asarray(people[0].keypoints, np.float32), frame, spec.margin
        )
    return res


def _pairs(names: list[str], count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    every = [(a, b) for a in names for b in names if a != b]
    if count == 0 or count >= len(every):
        return every
    return [every[i] for i in sorted(rng.choice(len(every), size=count, replace=False))]


def _name(layout: str, identity: str, number: int, view: int) -> str:
    if layout == "market":  # Market-1501's identity rule reads the leading person number
        return f"{number:04d}_c1s1_{view:06d}_00.jpg"
    return f"{identity}_{view:02d}.jpg"


def write_photo_dataset(
    root: str | Path,
    out: str | Path,
    detect: Detector,
    layout: str,
    frame: tuple[int, int],
    spec: PhotosSpec,
    quality: int = 95,
    on_photo: Callable[[PhotoResult], None] | None = None,
) -> tuple[dict, list[PhotoResult]]:
    """Examine every photo under ``root`` and write the layout to ``out`` atomically."""
    root, out = Path(root), Path(out)
    check_replaceable(out)
    photos, rejects = collect_photos(root)
    outside = len(rejects)
    results = []
    for photo in photos:
        results.append(examine(root, photo, detect, frame, spec))
        if on_photo is not None:
            on_photo(results[-1])
    kept = [r for r in results if r.image is not None]
    _name_kept(kept, layout, spec)
    rejects += [PrepareReject("image", "", r.photo.source, "", r.reason) for r in results if r.image is None]
    # One generator for all splits: the pair samples depend on drawing in split, then identity order.
    rng = np.random.default_rng(spec.seed)
    with staged_dir(out) as tmp:
        pair_counts = {
            split: _write_split(tmp, split, [r for r in kept if r.split == split], layout, spec, quality, rng)
            for split in SPLITS
        }
        write_rejects(tmp / REJECTS_FILE, sorted(rejects, key=lambda r: r.source))
        _write_photos_csv(tmp / PHOTOS_FILE, results)
        manifest = _manifest(layout, frame, spec, results, outside, kept, rejects, pair_counts)
        (tmp / MANIFEST_FILE).write_bytes(canonical_json(manifest))
    return manifest, results


def _name_kept(kept: list[PhotoResult], layout: str, spec: PhotosSpec) -> None:
    """Give each kept photo its split (by identity, seeded) and its file name in the layout."""
    identities = sorted({r.photo.identity for r in kept})
    splits = assign_splits(identities, spec.test_fraction, spec.seed) if identities else {}
    numbers = {ident: i + 1 for i, ident in enumerate(identities)}
    views: Counter = Counter()
    for r in kept:
        r.split = splits[r.photo.identity]
        r.name = _name(layout, r.photo.identity, numbers[r.photo.identity], views[r.photo.identity] + 1)
        views[r.photo.identity] += 1


def _write_split(
    tmp: Path,
    split: str,
    members: list[PhotoResult],
    layout: str,
    spec: PhotosSpec,
    quality: int,
    rng: np.random.Generator,
) -> dict[str, int]:
    """A split's images, annotation CSV and pairs CSV; returns its pair counts for the manifest."""
    prefix = OUTPUT_PREFIX[layout]
    (tmp / split).mkdir(parents=True)
    rows = ["name:keypoints_y:keypoints_x"]
    for r in members:
        assert r.image is not None and r.keypoints is not None  # kept: cropped together
        (tmp / split / r.name).write_bytes(encode_jpeg(_pil(r.image), quality))
        kp = np.where(visible(r.keypoints)[:, None], np.floor(r.keypoints + 0.5), MISSING).astype(int)
        rows.append(f"{r.name}:{kp[:, 1].tolist()}:{kp[:, 0].tolist()}")
    pairs: list[tuple[str, str]] = []
    for ident in sorted({r.photo.identity for r in members}):
        pairs += _pairs([r.name for r in members if r.photo.identity == ident], spec.pairs_per_identity, rng)
    write_lines(tmp / f"{prefix}-annotation-{split}.csv", rows)
    write_lines(tmp / f"{prefix}-pairs-{split}.csv", ["from,to", *(f"{a},{b}" for a, b in pairs)])
    return {"in": len(pairs), "written": len(pairs), "rejected": 0}


def _write_photos_csv(path: Path, results: list[PhotoResult]) -> None:
    """prepare-photos.csv: every photo examined, with its outcome."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["source", "identity", "name", "split", "confidence", "joints", "outcome"])
        for r in results:
            writer.writerow(
                [
                    r.photo.source,
                    r.photo.identity,
                    r.name,
                    r.split,
                    "" if np.isnan(r.confidence) else f"{r.confidence:.3f}",
                    r.joints,
                    r.reason or "written",
                ]
            )


def _manifest(
    layout: str,
    frame: tuple[int, int],
    spec: PhotosSpec,
    results: list[PhotoResult],
    outside: int,
    kept: list[PhotoResult],
    rejects: list[PrepareReject],
    pair_counts: dict[str, dict[str, int]],
) -> dict:
    """``outside``: image files found outside any identity folder (rejected before examining)."""
    image_rejects = [r for r in rejects if r.kind == "image"]
    return {
        "release": f"photos ({layout} layout)",
        "policy": {
            "frame": list(frame),
            **{
                k: getattr(spec, k)
                for k in (
                    "min_joints",
                    "min_confidence",
                    "second_person_confidence",
                    "margin",
                    "pairs_per_identity",
                    "test_fraction",
                    "seed",
                )
            },
        },
        "images": {
            "found": len(results) + outside,
            "written": {s: sum(1 for r in kept if r.split == s) for s in SPLITS},
            "rejected": len(image_rejects),
            "rejected_by_reason": dict(sorted(Counter(reason_key(r.reason) for r in image_rejects).items())),
        },
        "pairs": pair_counts,
    }


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image)


def letterbox(image: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """The whole photo fitted inside the frame on white (for showing a quarantined photo)."""
    fh, fw = frame
    h, w = image.shape[:2]
    scale = min(fh / h, fw / w)
    small = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    out = np.full((fh, fw, 3), 255, np.uint8)
    y, x = (fh - small.shape[0]) // 2, (fw - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def sheet_rows(
    root: str | Path, results: list[PhotoResult], frame: tuple[int, int], per_row: int = 6
) -> list[list]:
    """Contact-sheet rows: each identity's written crops with their keypoints, then the quarantined
    photos (whole, no skeleton) captioned with the reason."""
    rows: list[list] = []
    for ident in sorted({r.photo.identity for r in results if r.image is not None}):
        cells = [
            (r.image, r.keypoints, f"{r.split} {Path(r.name).stem}")
            for r in results
            if r.image is not None and r.photo.identity == ident
        ]
        rows += [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    none = np.full((18, 2), MISSING, np.float32)
    quarantined = []
    for r in results:
        if r.image is not None:
            continue
        img, _fmt, _reason = decode((Path(root) / r.photo.source).read_bytes(), exif=True)
        rgb = to_rgb(img)[0] if img is not None else None
        thumb = letterbox(np.asarray(rgb), frame) if rgb is not None else np.full((*frame, 3), 255, np.uint8)
        conf = "" if np.isnan(r.confidence) else f" {r.confidence:.2f}"
        quarantined.append((thumb, none, f"X {reason_key(r.reason)}{conf}"))
    rows += [quarantined[i : i + per_row] for i in range(0, len(quarantined), per_row)]
    return rows
