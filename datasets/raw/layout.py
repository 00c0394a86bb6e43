"""Adapters for the raw dataset layouts the field's public code ships.

A layout is *data*, not code: the CSV file-name patterns, the image folders, the
number of keypoints and the identity rule are fields of :class:`LayoutSpec`.  A
new layout (the portrait one, say: ``portrait-landmarks-*.csv`` with 68 points)
is one more entry in :data:`LAYOUTS`.

DeepFashion In-shop / Market-1501 as PATN, GFLA and the paper's code ship them::

    ROOT/train/*.jpg  ROOT/test/*.jpg
    ROOT/fasion-annotation-train.csv   name:keypoints_y:keypoints_x   (sep ':')
    ROOT/fasion-pairs-train.csv        from,to

with the prefix spelled ``fasion-`` (sic), ``fashion-``, ``fashion-resize-`` or
``fasion-resize-`` for DeepFashion and ``market-`` for Market-1501.  Keypoint
cells are JSON lists of ints in the *source* frame, y before x, -1 missing.
Parsing here never raises on a bad row: every problem becomes a :class:`RowIssue`
so the validator can quarantine it with a reason.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.pose.keypoints import MISSING

SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class LayoutSpec:
    """How one raw layout names its files and what its annotation rows hold."""

    name: str
    num_keypoints: int
    # Candidate file names per split (``{split}`` is substituted), tried in order.
    annotation_names: tuple[str, ...]
    pair_names: tuple[str, ...]
    image_dirs: tuple[str, ...] = ("{split}",)
    # Annotation columns: the image name, then the y cell, then the x cell.
    name_column: str = "name"
    y_column: str = "keypoints_y"
    x_column: str = "keypoints_x"
    separator: str = ":"
    pair_columns: tuple[str, str] = ("from", "to")
    # Identity of an image name (group 'id'); used to report identity leaks
    # between splits.  Names that do not match are their own identity.
    identity_pattern: str = r"^(?P<id>.+)_[^_]+$"


def _prefixed(prefixes: tuple[str, ...], kind: str) -> tuple[str, ...]:
    return tuple(f"{p}-{kind}-{{split}}.csv" for p in prefixes)


# The prefixes of the layouts whose CSV names are ``<prefix>-annotation-{split}.csv`` /
# ``<prefix>-pairs-{split}.csv``; a generator writing one of these layouts uses one of them.
CSV_PREFIXES: dict[str, tuple[str, ...]] = {
    "deepfashion": ("fasion", "fashion", "fashion-resize", "fasion-resize"),
    "market": ("market",),
}

LAYOUTS: dict[str, LayoutSpec] = {
    "deepfashion": LayoutSpec(
        name="deepfashion",
        num_keypoints=18,
        annotation_names=_prefixed(CSV_PREFIXES["deepfashion"], "annotation"),
        pair_names=_prefixed(CSV_PREFIXES["deepfashion"], "pairs"),
        image_dirs=("{split}", "{split}_256", "fashion_resize/{split}"),
        # fashionWOMENDressesid0000262902_3back.jpg -> fashionWOMENDressesid0000262902
        identity_pattern=r"^(?P<id>.+?id\d+)_|^(?P<id2>.+)_[^_]+$",
    ),
    "market": LayoutSpec(
        name="market",
        num_keypoints=18,
        annotation_names=_prefixed(CSV_PREFIXES["market"], "annotation"),
        pair_names=_prefixed(CSV_PREFIXES["market"], "pairs"),
        image_dirs=("{split}", "bounding_box_{split}"),
        # 0002_c1s1_000451_03.jpg -> 0002
        identity_pattern=r"^(?P<id>-?\d+)_",
    ),
    # Portraits (docs/portrait.md): 68 iBUG landmarks; portrait-id00012_03.jpg -> portrait-id00012
    "portrait": LayoutSpec(
        name="portrait",
        num_keypoints=68,
        annotation_names=("portrait-landmarks-{split}.csv",),
        pair_names=("portrait-pairs-{split}.csv",),
        y_column="landmarks_y",
        x_column="landmarks_x",
    ),
}


class LayoutError(ValueError):
    """The raw folder does not have the files a layout needs (names what is missing)."""


@dataclass(frozen=True)
class RowIssue:
    """One annotation or pair row that cannot be used, with its 1-based CSV line."""

    file: str
    line: int
    name: str
    reason: str


@dataclass(frozen=True)
class AnnotationRow:
    line: int  # 1-based line in the CSV (the header is line 1)
    name: str
    keypoints: np.ndarray  # float32 [K, 2] (x, y) in the *source* frame, -1 missing


@dataclass(frozen=True)
class PairRow:
    line: int
    source: str
    target: str


@dataclass
class SplitFiles:
    """Where one split's images and CSVs are."""

    split: str
    image_dir: Path
    annotation_csv: Path
    pairs_csv: Path
    image_files: dict[str, Path] = field(default_factory=dict)  # name -> path, sorted by name


def _first_existing(root: Path, names: tuple[str, ...], split: str, what: str) -> Path:
    tried = [n.format(split=split) for n in names]
    for candidate in tried:
        if (root / candidate).is_file():
            return root / candidate
    raise LayoutError(f"{root}: no {what} CSV for split {split!r}; looked for {', '.join(tried)}")


def find_split(root: str | Path, layout: LayoutSpec, split: str) -> SplitFiles:
    """Locate the image folder and the CSVs of ``split`` under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: raw dataset folder not found")
    dirs = [root / d.format(split=split) for d in layout.image_dirs]
    image_dir = next((d for d in dirs if d.is_dir()), None)
    if image_dir is None:
        raise LayoutError(
            f"{root}: no image folder for split {split!r}; looked for "
            + ", ".join(str(d.relative_to(root)) + "/" for d in dirs)
        )
    files = SplitFiles(
        split=split,
        image_dir=image_dir,
        annotation_csv=_first_existing(root, layout.annotation_names, split, "annotation"),
        pairs_csv=_first_existing(root, layout.pair_names, split, "pairs"),
    )
    files.image_files = {
        p.name: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    }
    return files


def parse_keypoint_cell(text: str, expected: int, column: str) -> list[float]:
    """One JSON list cell -> ``expected`` numbers; raises ValueError naming the column."""
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{column}: not a JSON list: {str(text)[:40]!r}") from None
    if not isinstance(values, list):
        raise ValueError(f"{column}: expected a JSON list, got {type(values).__name__}")  # noqa: TRY004 - bad data: ValueError
    if len(values) != expected:
        raise ValueError(f"{column}: expected {expected} values, got {len(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{column}[{i}]: not a number: {v!r}")
    return [float(v) for v in values]


def read_annotations(path: Path, layout: LayoutSpec) -> tuple[list[AnnotationRow], list[RowIssue]]:
    """Parse an annotation CSV; bad rows come back as issues, never as exceptions."""
    rows: list[AnnotationRow] = []
    issues: list[RowIssue] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=layout.separator)
        header = next(reader, None)
        wanted = (layout.name_column, layout.y_column, layout.x_column)
        if header is None or any(col not in [h.strip() for h in header] for col in wanted):
            raise LayoutError(
                f"{path}: header must hold columns {layout.separator.join(wanted)}, got {header}"
            )
        cols = [h.strip() for h in header]
        i_name, i_y, i_x = (cols.index(c) for c in wanted)
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue  # blank line
            name = cells[i_name].strip() if len(cells) > i_name else ""
            if len(cells) != len(cols):
                issues.append(
                    RowIssue(
                        path.name,
                        line,
                        name or f"line {line}",
                        f"malformed row: {len(cells)} fields, expected {len(cols)}",
                    )
                )
                continue
            if not name:
                issues.append(
                    RowIssue(path.name, line, f"line {line}", f"malformed row: empty {layout.name_column}")
                )
                continue
            try:
                ys = parse_keypoint_cell(cells[i_y], layout.num_keypoints, layout.y_column)
                xs = parse_keypoint_cell(cells[i_x], layout.num_keypoints, layout.x_column)
            except ValueError as exc:
                issues.append(RowIssue(path.name, line, name, f"malformed keypoint cell {exc}"))
                continue
            kp = np.stack([np.asarray(xs, np.float32), np.asarray(ys, np.float32)], axis=1)
            rows.append(AnnotationRow(line, name, kp))
    return rows, issues


def read_pairs(path: Path, layout: LayoutSpec) -> tuple[list[PairRow], list[RowIssue]]:
    """Parse a pairs CSV (comma separated, columns ``from,to``)."""
    rows: list[PairRow] = []
    issues: list[RowIssue] = []
    src_col, dst_col = layout.pair_columns
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if src_col not in header or dst_col not in header:
            raise LayoutError(f"{path}: header must hold columns {src_col},{dst_col}, got {header}")
        i_src, i_dst = header.index(src_col), header.index(dst_col)
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) <= max(i_src, i_dst) or not cells[i_src].strip() or not cells[i_dst].strip():
                issues.append(
                    RowIssue(
                        path.name,
                        line,
                        ",".join(cells) or f"line {line}",
                        f"malformed pair row: expected {src_col},{dst_col}",
                    )
                )
                continue
            rows.append(PairRow(line, cells[i_src].strip(), cells[i_dst].strip()))
    return rows, issues


def rescale_keypoints(
    kp: np.ndarray, source_size: tuple[int, int], image_size: tuple[int, int]
) -> np.ndarray:
    """Map (x, y) from the annotation frame to the working frame (pixel centres), -1 kept.

    Joints that fall outside the source frame are set to missing: the field's
    annotations occasionally hold such points, and a Gaussian outside the image
    would be an all-zero channel anyway.
    """
    (h0, w0), (h1, w1) = source_size, image_size
    kp = np.asarray(kp, np.float32)
    missing = (kp[:, 0] == MISSING) | (kp[:, 1] == MISSING)
    outside = (kp[:, 0] < 0) | (kp[:, 1] < 0) | (kp[:, 0] > w0 - 1) | (kp[:, 1] > h0 - 1)
    out = np.empty_like(kp)
    out[:, 0] = (kp[:, 0] + 0.5) * (w1 / w0) - 0.5
    out[:, 1] = (kp[:, 1] + 0.5) * (h1 / h0) - 0.5
    out[missing | outside] = MISSING
    return out


def identity_of(name: str, layout: LayoutSpec) -> str:
    """The person/item identity encoded in an image name (used for leak reports)."""
    stem = Path(name).stem
    match = re.match(layout.identity_pattern, stem)
    if not match:
        return stem
    found = [v for v in match.groupdict().values() if v]
    return found[0] if found else stem


def get_layout(name: str) -> LayoutSpec:
    if name not in LAYOUTS:
        raise LayoutError(f"unknown layout {name!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]
