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
    RowIssue,
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


@dataclass(frozen=True)
class _Annotations:
    """One split's annotation CSV, duplicates resolved, read against the image folders."""

    files: SplitFiles
    rows: dict[str, AnnotationRow]  # the first row of each name
    conflicts: dict[str, str]  # names whose rows disagree -> why their image is rejected
    bad_row_reason: dict[str, str]  # names only a rejected row carries -> that row's reason
    other: frozenset[str]  # names in the other splits' image folders

    def universe(self) -> list[str]:
        """Every image name the split is counted by: files, good rows and named bad rows."""
        return sorted(set(self.files.image_files) | set(self.rows) | set(self.bad_row_reason))


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
    rejects = [
        Reject(split, "row", issue.name, f"{issue.reason} ({issue.file} line {issue.line})")
        for issue in row_issues
    ]
    good_rows, conflicts, duplicate_rejects = _resolve_duplicates(split, rows, files.annotation_csv.name)
    rejects += duplicate_rejects
    ann = _Annotations(
        files,
        good_rows,
        conflicts,
        _rejected_row_names(row_issues, good_rows, files),
        frozenset(other_split_names),
    )
    universe = ann.universe()
    images, image_rejects, outside_of = _accept_images(
        ann, universe, spec, cfg, split, layout, dataset, check_files, progress
    )
    rejects += image_rejects
    rejected_images = {r.name: r.reason for r in rejects if r.kind == "image"}
    pairs, pair_rejects, pairs_in = _validate_pairs(split, files, layout, images, rejected_images)
    rejects += pair_rejects
    counts = {
        "images_in": len(universe),
        "images_written": len(images),
        "images_rejected": sum(1 for r in rejects if r.kind == "image"),
        "pairs_in": pairs_in,
        "pairs_written": len(pairs),
        "pairs_rejected": sum(1 for r in rejects if r.kind == "pair"),
        "rows_in": len(rows) + len(row_issues),
        "rows_rejected": sum(1 for r in rejects if r.kind == "row"),
        "joints_outside_frame": sum(outside_of.values()),
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


def _resolve_duplicates(
    split: str, rows: list[AnnotationRow], csv_name: str
) -> tuple[dict[str, AnnotationRow], dict[str, str], list[Reject]]:
    """``(first row of each name, conflicting names -> reason, rejects of the repeated rows)``.

    An identical repeat is only dropped; rows that disagree make the image ambiguous."""
    first: dict[str, AnnotationRow] = {}
    conflicts: dict[str, str] = {}
    rejects: list[Reject] = []
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
    return first, conflicts, rejects


def _rejected_row_names(
    row_issues: list[RowIssue], good_rows: dict[str, AnnotationRow], files: SplitFiles
) -> dict[str, str]:
    """Names only a rejected row carries -> its reason.  A bad row stands for an image only when it
    carried a real name (an empty or garbled row is a rejected row, not a phantom image)."""
    return {
        i.name: i.reason
        for i in row_issues
        if i.name not in good_rows
        and (i.name in files.image_files or i.reason.startswith("malformed keypoint cell"))
    }


def _table_reason(ann: _Annotations, name: str) -> str | None:
    """Why the CSV and the folder listings alone rule the image out, or None."""
    files = ann.files
    csv_name = files.annotation_csv.name
    path = files.image_files.get(name)
    if name in ann.other and path is not None:
        return "duplicate name: the same file name is in both splits' image folders"
    if name in ann.conflicts:
        return ann.conflicts[name]
    if path is None:
        return f"missing image file: {csv_name} names it but {files.image_dir.name}/{name} does not exist"
    if name not in ann.rows:
        return (
            f"annotation row rejected: {ann.bad_row_reason[name]}"
            if name in ann.bad_row_reason
            else f"missing annotation row: {name} has no row in {csv_name}"
        )
    return None


def _working_keypoints(keypoints: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, int, int]:
    """``(keypoints in the working frame, joints visible there, visible joints that fell outside)``."""
    # Rounded to 1/1000 px so the JSON in the shards and the heatmaps agree exactly.
    kp = np.round(rescale_keypoints(keypoints, spec.source_size, spec.image_size), 3)
    raw_visible = int(np.sum((keypoints[:, 0] != MISSING) & (keypoints[:, 1] != MISSING)))
    n_visible = int(np.sum((kp[:, 0] != MISSING) & (kp[:, 1] != MISSING)))
    return kp, n_visible, raw_visible - n_visible


def _accept_images(
    ann: _Annotations,
    universe: list[str],
    spec: DatasetSpec,
    cfg: PreprocessConfig,
    split: str,
    layout: LayoutSpec,
    dataset: str,
    check_files: bool,
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, ImageRecord], list[Reject], dict[str, int]]:
    """``(accepted images, rejects, joints outside the frame per name)``, name by name in order;
    the outside counts include images rejected for too few visible joints."""
    images: dict[str, ImageRecord] = {}
    rejects: list[Reject] = []
    outside_of: dict[str, int] = {}
    for name in universe:
        reason = _table_reason(ann, name)
        path = ann.files.image_files.get(name)
        if reason is None and check_files:
            assert path is not None
            reason = check_image(path, spec.source_size, dataset)
        if reason is None:
            annotation = ann.rows[name]
            kp, n_visible, outside_of[name] = _working_keypoints(annotation.keypoints, spec)
            if n_visible < cfg.min_visible_joints:
                reason = (
                    f"too few visible joints: {n_visible} < preprocess.min_visible_joints="
                    f"{cfg.min_visible_joints}"
                )
            else:
                assert path is not None
                images[name] = ImageRecord(name, path, kp, identity_of(name, layout), annotation.line)
        if reason is not None:
            rejects.append(Reject(split, "image", name, reason))
        if progress is not None:
            progress(1)
    return images, rejects, outside_of


def _validate_pairs(
    split: str,
    files: SplitFiles,
    layout: LayoutSpec,
    images: dict[str, ImageRecord],
    rejected_images: dict[str, str],
) -> tuple[list[PairRow], list[Reject], int]:
    """``(accepted pairs in CSV order, rejects, pair rows read)``."""
    pair_rows, pair_issues = read_pairs(files.pairs_csv, layout)
    pairs_csv = files.pairs_csv.name
    rejects = [
        Reject(split, "pair", issue.name, f"{issue.reason} ({pairs_csv} line {issue.line})")
        for issue in pair_issues
    ]
    seen: dict[tuple[str, str], int] = {}
    pairs: list[PairRow] = []
    for pr in pair_rows:
        reason = _pair_reason(pr, split, images, rejected_images)
        if reason is None and (pr.source, pr.target) in seen:
            reason = f"duplicate pair: {pairs_csv} line {pr.line} repeats line {seen[(pr.source, pr.target)]}"
        if reason is not None:
            label = f"{pr.source},{pr.target}"
            rejects.append(Reject(split, "pair", label, f"{reason} ({pairs_csv} line {pr.line})"))
            continue
        seen[(pr.source, pr.target)] = pr.line
        pairs.append(pr)
    return pairs, rejects, len(pair_rows) + len(pair_issues)


def _pair_reason(
    pr: PairRow, split: str, images: dict[str, ImageRecord], rejected_images: dict[str, str]
) -> str | None:
    """Why a pair cannot be used because of its images (the source's fault first), or None."""
    for role, name in (("source", pr.source), ("target", pr.target)):
        if name in images:
            continue
        if name in rejected_images:
            return f"{role} image {name} was rejected ({rejected_images[name]})"
        return f"{role} image {name} is not in the {split} split"
    return None


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
