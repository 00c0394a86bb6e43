"""Validation with quarantine: every raw input is either accepted or rejected with a reason.

Inputs are counted per split as images (the union of files in the image folder
and names in the annotation CSV), annotation rows and pair rows.  The functions
here never raise on bad data; they return :class:`Reject` records, and the
counts always add up: ``images_in = accepted + rejected`` (likewise for pairs).
Only a missing folder/CSV or an unreadable CSV header is fatal
(:class:`datasets.raw.layout.LayoutError`), because then nothing can be counted.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets.pose.keypoints import MISSING
from datasets.raw.layout import (
    AnnotationRow,
    LayoutSpec,
    PairRow,
    SplitFiles,
    find_split,
    identity_of,
    read_annotations,
    read_pairs,
    rescale_keypoints,
)
from datasets.specs import DatasetSpec, PreprocessConfig

KINDS = ("image", "pair", "row")


@dataclass(frozen=True)
class Reject:
    """One line of rejects.csv."""

    split: str
    kind: str  # image | pair | row
    name: str
    reason: str


@dataclass(frozen=True)
class ImageRecord:
    """An accepted image: where it is and its keypoints in the working frame."""

    name: str
    path: Path
    keypoints: np.ndarray  # float32 [K, 2] (x, y) in image_size pixels, -1 missing
    identity: str
    line: int  # annotation CSV line


@dataclass
class SplitResult:
    split: str
    files: SplitFiles
    images: dict[str, ImageRecord]  # accepted, sorted by name
    pairs: list[PairRow]  # accepted, in CSV order
    rejects: list[Reject]
    counts: dict[str, int] = field(default_factory=dict)
    # joints outside the frame per accepted image, kept only while image files are still unchecked
    outside: dict[str, int] = field(default_factory=dict)

    def rejected(self, kind: str) -> int:
        return sum(1 for r in self.rejects if r.kind == kind)


# The container a file name promises: a PNG named .jpg (or the reverse) is quarantined, since
# tools that trust the extension (and the shard's byte-for-byte JPEG copy) would misread it.
_FORMAT_OF_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def check_image(path: Path, source_size: tuple[int, int], dataset: str = "") -> str | None:
    """Why the image file cannot be used, or None.  Decodes it fully (truncation shows only then)."""
    return load_image(path, source_size, dataset, keep_pixels=False)[0]


def load_image(
    path: Path, source_size: tuple[int, int], dataset: str = "", keep_pixels: bool = True
) -> tuple[str | None, bytes | None, np.ndarray | None]:
    """``(reason, raw bytes, RGB uint8 pixels)``: the file read once and decoded once.

    ``reason`` is why the image cannot be used (None when it can); the pixels (None with
    ``keep_pixels=False`` or a reason) are what the shard writer encodes from, so checking an image
    and writing it cost one decode, not two.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return f"unreadable image: {exc.strerror}", None, None
    if not raw:
        return "zero-byte file", None, None
    h0, w0 = source_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBomb and EXIF warnings
            with Image.open(io.BytesIO(raw)) as im:
                mode, (w, h) = im.mode, im.size
                expected = _FORMAT_OF_SUFFIX.get(Path(path).suffix.lower())
                if expected is not None and im.format != expected:
                    return (
                        (
                            f"wrong extension: {Path(path).name} holds {im.format or 'unknown'} data, "
                            f"not {expected}"
                        ),
                        None,
                        None,
                    )
                if mode != "RGB":
                    return (
                        (
                            f"wrong mode: {mode} ({len(im.getbands())} band(s)); expected RGB, "
                            "3 channels, 8 bits each"
                        ),
                        None,
                        None,
                    )
                if (h, w) != (h0, w0):
                    where = f"datasets.{dataset}.source_size" if dataset else "source_size"
                    return (
                        (f"wrong size: {h}x{w} (HxW); expected {h0}x{w0}, the annotation frame ({where})"),
                        None,
                        None,
                    )
                im.load()
                # libjpeg-turbo's accurate integer DCT, as in OpenCV: the same pixels cv2.imdecode gives.
                pixels = np.asarray(im, dtype=np.uint8) if keep_pixels else None
    except UnidentifiedImageError:
        return "unreadable image: not a recognised image format", None, None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "premature" in text.lower():
            return f"truncated image: {text}", None, None
        return f"unreadable image: {text}", None, None
    except (ValueError, SyntaxError) as exc:  # PIL raises these on some corrupt headers
        return f"unreadable image: {exc}", None, None
    return None, raw, pixels


def validate_split(
    spec: DatasetSpec,
    layout: LayoutSpec,
    cfg: PreprocessConfig,
    split: str,
    other_split_names: Iterable[str] = (),
    dataset: str = "",
    progress: Callable[[int], None] | None = None,
    check_files: bool = True,
) -> SplitResult:
    """Validate one split of the raw dataset at ``spec.root``.

    ``check_files=False`` checks everything the CSVs and the folder listing decide (rows, names,
    duplicates, missing files, visible joints) but not the image files themselves: the shard
    writer does that while it decodes each image for writing (``datasets.shards.jobs``), and
    removes what fails from the result.  ``outside`` then holds each accepted image's count of
    joints outside the frame, so those can be taken back out of ``joints_outside_frame``.
    """
    files = find_split(spec.root, layout, split)
    rows, row_issues = read_annotations(files.annotation_csv, layout)
    rejects: list[Reject] = []
    csv_name = files.annotation_csv.name
    for issue in row_issues:
        rejects.append(Reject(split, "row", issue.name, f"{issue.reason} ({issue.file} line {issue.line})"))

    # Duplicate names among annotation rows: identical repeats are dropped,
    # disagreeing ones make the image ambiguous.
    first: dict[str, AnnotationRow] = {}
    conflicts: dict[str, str] = {}
    for row in rows:
        prev = first.get(row.name)
        if prev is None:
            first[row.name] = row
            continue
        same = np.array_equal(prev.keypoints, row.keypoints)
        what = "repeats" if same else "disagrees with"
        rejects.append(
            Reject(
                split, "row", row.name, f"duplicate name: {csv_name} line {row.line} {what} line {prev.line}"
            )
        )
        if not same:
            conflicts.setdefault(
                row.name,
                f"duplicate name: {csv_name} lines {prev.line} and {row.line} give different keypoints",
            )
    good_rows = {name: row for name, row in first.items()}
    # A bad row only stands for an image when it carried a real name (an empty or
    # garbled row is counted as a rejected row, not as a phantom image).
    bad_row_reason = {
        i.name: i.reason
        for i in row_issues
        if i.name not in good_rows
        and (i.name in files.image_files or i.reason.startswith("malformed keypoint cell"))
    }

    other = set(other_split_names)
    universe = sorted(set(files.image_files) | set(good_rows) | set(bad_row_reason))
    images: dict[str, ImageRecord] = {}
    outside = 0
    outside_of: dict[str, int] = {}
    for name in universe:
        reason = None
        annotation = good_rows.get(name)
        path = files.image_files.get(name)
        if name in other and path is not None:
            reason = "duplicate name: the same file name is in both splits' image folders"
        elif name in conflicts:
            reason = conflicts[name]
        elif path is None:
            reason = (
                f"missing image file: {csv_name} names it but {files.image_dir.name}/{name} does not exist"
            )
        elif annotation is None:
            reason = (
                f"annotation row rejected: {bad_row_reason[name]}"
                if name in bad_row_reason
                else f"missing annotation row: {name} has no row in {csv_name}"
            )
        elif check_files:
            reason = check_image(path, spec.source_size, dataset)
        kp = None
        if reason is None:
            assert annotation is not None and path is not None
            # Rounded to 1/1000 px so the JSON in the shards and the heatmaps agree exactly.
            kp = np.round(rescale_keypoints(annotation.keypoints, spec.source_size, spec.image_size), 3)
            raw_visible = int(
                np.sum((annotation.keypoints[:, 0] != MISSING) & (annotation.keypoints[:, 1] != MISSING))
            )
            n_visible = int(np.sum((kp[:, 0] != MISSING) & (kp[:, 1] != MISSING)))
            outside += raw_visible - n_visible
            outside_of[name] = raw_visible - n_visible
            if n_visible < cfg.min_visible_joints:
                reason = (
                    f"too few visible joints: {n_visible} < preprocess.min_visible_joints="
                    f"{cfg.min_visible_joints}"
                )
        if reason is not None:
            rejects.append(Reject(split, "image", name, reason))
        else:
            assert annotation is not None and path is not None and kp is not None
            images[name] = ImageRecord(name, path, kp, identity_of(name, layout), annotation.line)
        if progress is not None:
            progress(1)

    pair_rows, pair_issues = read_pairs(files.pairs_csv, layout)
    pairs_csv = files.pairs_csv.name
    for issue in pair_issues:
        rejects.append(Reject(split, "pair", issue.name, f"{issue.reason} ({pairs_csv} line {issue.line})"))
    rejected_images = {r.name: r.reason for r in rejects if r.kind == "image"}
    seen: dict[tuple[str, str], int] = {}
    pairs: list[PairRow] = []
    for pr in pair_rows:
        label = f"{pr.source},{pr.target}"
        reason = None
        for role, name in (("source", pr.source), ("target", pr.target)):
            if name in images:
                continue
            if name in rejected_images:
                reason = f"{role} image {name} was rejected ({rejected_images[name]})"
            else:
                reason = f"{role} image {name} is not in the {split} split"
            break
        if reason is None and (pr.source, pr.target) in seen:
            reason = f"duplicate pair: {pairs_csv} line {pr.line} repeats line {seen[(pr.source, pr.target)]}"
        if reason is not None:
            rejects.append(Reject(split, "pair", label, f"{reason} ({pairs_csv} line {pr.line})"))
            continue
        seen[(pr.source, pr.target)] = pr.line
        pairs.append(pr)

    counts = {
        "images_in": len(universe),
        "images_written": len(images),
        "images_rejected": sum(1 for r in rejects if r.kind == "image"),
        "pairs_in": len(pair_rows) + len(pair_issues),
        "pairs_written": len(pairs),
        "pairs_rejected": sum(1 for r in rejects if r.kind == "pair"),
        "rows_in": len(rows) + len(row_issues),
        "rows_rejected": sum(1 for r in rejects if r.kind == "row"),
        "joints_outside_frame": outside,
    }
    return SplitResult(
        split,
        files,
        images,
        pairs,
        rejects,
        counts,
        {n: outside_of[n] for n in images} if not check_files else {},
    )


def validate_dataset(
    spec: DatasetSpec,
    layout: LayoutSpec,
    cfg: PreprocessConfig,
    dataset: str = "",
    progress: Callable[[int], None] | None = None,
    check_files: bool = True,
) -> dict[str, SplitResult]:
    """Validate train and test; a file name in both image folders is rejected in both
    (``check_files``: see :func:`validate_split`)."""
    from datasets.raw.layout import SPLITS

    found = {s: find_split(spec.root, layout, s) for s in SPLITS}
    results = {}
    for split in SPLITS:
        others = set().union(*(set(found[o].image_files) for o in SPLITS if o != split))
        results[split] = validate_split(spec, layout, cfg, split, others, dataset, progress, check_files)
    return results


def identity_leaks(results: dict[str, SplitResult]) -> list[str]:
    """Identities with accepted images in more than one split (reported, not rejected)."""
    per_split = [Counter(r.identity for r in res.images.values()) for res in results.values()]
    if len(per_split) < 2:
        return []
    common = set(per_split[0])
    for c in per_split[1:]:
        common &= set(c)
    return sorted(common)


def count_universe(spec: DatasetSpec, layout: LayoutSpec) -> int:
    """How many image names validation will look at (for a progress bar's total)."""
    from datasets.raw.layout import SPLITS

    total = 0
    for split in SPLITS:
        files = find_split(spec.root, layout, split)
        rows, issues = read_annotations(files.annotation_csv, layout)
        total += len(set(files.image_files) | {r.name for r in rows} | {i.name for i in issues})
    return total
