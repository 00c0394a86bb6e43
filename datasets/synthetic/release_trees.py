"""Official-release-shaped trees drawn by the synthetic figure generator (prepare's tests and bench).

``make_deepfashion_release`` writes DeepFashion In-shop as users download it: high-resolution
images in ``img_highres/MEN|WOMEN/<category>/id_XXXXXXXX/NN_V_view.jpg``, the field's
``train.lst``/``test.lst`` of flattened names and ``fasion-resize-*`` CSVs whose keypoints are in
the 256×176 frame.  ``make_market_release`` writes Market-1501's ``bounding_box_train/``,
``bounding_box_test/``, ``query/`` at 128×64 with ``market-*`` CSVs.  With ``faults=True`` each
adds one input per fault prepare must handle; ``Release.expect`` says what becomes of each.
Without faults every image is converted, so ``pipelines.bench prepare`` times clean releases.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.pose.keypoints import MISSING
from datasets.specs import SynthesizeSpec
from datasets.synthetic.fashion import (
    annotation_row,
    keypoints_to_int,
    plan_identities,
    render_sample,
    save_jpeg,
)

FRAME = {"deepfashion": (256, 176), "market": (128, 64)}


@dataclass
class Release:
    root: Path
    layout: str
    names: dict[str, list[str]] = field(
        default_factory=lambda: {"train": [], "test": []}
    )  # written, in order
    pairs: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: {"train": [], "test": []}
    )  # written
    csv_pairs: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {"train": [], "test": []})
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int (x, y) in the frame
    expect: dict[str, str] = field(
        default_factory=dict
    )  # source -> reject reason prefix, or "converted: <note>"
    sources: dict[str, Path] = field(default_factory=dict)  # name -> file in the tree
    images: int = 0  # image files in the tree

    def rejected(self) -> dict[str, str]:
        return {k: v for k, v in self.expect.items() if not v.startswith("converted")}


def to_frame(kp: np.ndarray, size: Sequence[int], frame: tuple[int, int]) -> np.ndarray:
    """Keypoints (x, y) of an image of ``size`` (H, W) in the annotation frame, pixel centres kept."""
    (h, w), (fh, fw) = size, frame
    out = np.asarray(kp, np.float64).copy()
    miss = (out[:, 0] == MISSING) | (out[:, 1] == MISSING)
    out[:, 0] = (out[:, 0] + 0.5) * fw / w - 0.5
    out[:, 1] = (out[:, 1] + 0.5) * fh / h - 0.5
    out[miss] = MISSING
    return keypoints_to_int(out)


def _spec(prefix: str, size: tuple[int, int], train: int, test: int, views: int, seed: int) -> SynthesizeSpec:
    return SynthesizeSpec(
        generator="figure",
        seed=seed,
        height=size[0],
        width=size[1],
        train_identities=train,
        test_identities=test,
        views_per_identity=views,
        supersample=1,
        file_prefix=prefix,
        background="clutter" if prefix == "market" else "gradient",
    )


def _write_csvs(rel: Release, prefix: str, rows: dict[str, list[str]]) -> None:
    for split in ("train", "test"):
        (rel.root / f"{prefix}-annotation-{split}.csv").write_text(
            "\n".join(["name:keypoints_y:keypoints_x", *rows[split]]) + "\n"
        )
        (rel.root / f"{prefix}-pairs-{split}.csv").write_text(
            "\n".join(["from,to", *(f"{a},{b}" for a, b in rel.csv_pairs[split])]) + "\n"
        )


def _all_pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in names for b in names if a != b]


def make_deepfashion_release(
    root: Path,
    train: int = 3,
    test: int = 2,
    views: int = 3,
    size: tuple[int, int] = (550, 375),
    full_size_first: bool = True,
    faults: bool = True,
    seed: int = 5,
) -> Release:
    """The In-shop release tree; ``size`` (H, W) keeps the 750×1101 aspect at half the pixels, and
    the first image is rendered at the release's own 1101×750 when ``full_size_first``."""
    rel = Release(Path(root), "deepfashion")
    frame = FRAME["deepfashion"]
    spec = _spec("fasion", size, train, test + (1 if faults else 0), views, seed)
    big = _spec("fasion", (1101, 750), train, test + (1 if faults else 0), views, seed)
    rows: dict[str, list[str]] = {"train": [], "test": []}
    lists: dict[str, list[str]] = {"train": [], "test": []}
    idents = plan_identities(spec)
    unlisted = idents[-1] if faults else None
    for ident in idents:
        names = []
        for k in range(views):
            first = full_size_first and not rel.images
            sample = render_sample(big if first else spec, ident, k)
            gender, category = ident.look.gender, ident.category
            view = sample.name.rsplit("_", 1)[1]  # "2side.jpg"
            path = (
                rel.root
                / "img_highres"
                / gender
                / category
                / f"id_{ident.number:08d}"
                / f"01_{view[0]}_{view[1:]}"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(path, sample.image, 90)
            rel.images += 1
            kp = to_frame(sample.keypoints, sample.image.shape[:2], frame)
            rows[ident.split].append(annotation_row(sample.name, kp))
            source = path.relative_to(rel.root).as_posix()
            rel.sources[sample.name] = path
            if ident is unlisted:
                rel.expect[source] = "not in any split list"
                continue
            names.append(sample.name)
            lists[ident.split].append(sample.name)
            rel.keypoints[sample.name] = kp
        rel.names[ident.split] += names
        rel.pairs[ident.split] += _all_pairs(names)
        rel.csv_pairs[ident.split] += _all_pairs(names)
    if faults:
        _deepfashion_faults(rel, rows, lists)
    for split in ("train", "test"):
        (rel.root / f"{split}.lst").write_text("\n".join(lists[split]) + "\n")
    _write_csvs(rel, "fasion-resize", rows)
    return rel


def _deepfashion_faults(rel: Release, rows: dict[str, list[str]], lists: dict[str, list[str]]) -> None:
    train = rel.names["train"]
    # A CMYK JPEG and a PNG saved under .jpg: both readable, converted, kept.
    cmyk = rel.sources[train[1]]
    Image.open(cmyk).convert("CMYK").save(cmyk, format="JPEG", quality=90)
    rel.expect[cmyk.relative_to(rel.root).as_posix()] = "converted: mode CMYK→RGB"
    png = rel.sources[train[2]]
    Image.open(png).save(png, format="PNG")
    rel.expect[png.relative_to(rel.root).as_posix()] = "converted: PNG content→JPEG"
    # A truncated JPEG: rejected, and so are the pairs that use it.
    broken_name = rel.names["test"][0]
    broken = rel.sources[broken_name]
    broken.write_bytes(broken.read_bytes()[:600])
    rel.expect[broken.relative_to(rel.root).as_posix()] = "unreadable image"
    # A square image (the 256×256 img/ release's shape) under the resize policy: rejected.
    square_name = rel.names["test"][1]
    square = rel.sources[square_name]
    Image.new("RGB", (400, 400), (200, 200, 200)).save(square, format="JPEG")
    rel.expect[square.relative_to(rel.root).as_posix()] = "aspect ratio"
    for name in (broken_name, square_name):
        rel.names["test"].remove(name)
        rel.keypoints.pop(name)
    rel.pairs["test"] = [p for p in rel.pairs["test"] if broken_name not in p and square_name not in p]
    # A list entry (with its annotation row) whose image was never downloaded.
    ghost = "fashionWOMENDressesid0009999901_1front.jpg"
    lists["test"].append(ghost)
    rows["test"].append(annotation_row(ghost, np.full((18, 2), 50)))
    rel.expect[f"list:{ghost}"] = "listed in test.lst, no image in the release"
    # An image in the tree with no annotation row.
    orphan = rel.root / "img_highres/MEN/Denim/id_00000080/01_1_front.jpg"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    save_jpeg(orphan, np.full((550, 375, 3), 180, np.uint8), 90)
    rel.images += 1
    lists["train"].append("fashionMENDenimid0000008001_1front.jpg")
    rel.expect[orphan.relative_to(rel.root).as_posix()] = "no annotation row"


def make_market_release(
    root: Path, train: int = 3, test: int = 2, views: int = 3, faults: bool = True, seed: int = 6
) -> Release:
    """Market-1501's folders at 128×64; the last view of each test identity sits in query/."""
    rel = Release(Path(root), "market")
    spec = _spec("market", FRAME["market"], train, test, views, seed)
    rows: dict[str, list[str]] = {"train": [], "test": []}
    for ident in plan_identities(spec):
        names = []
        for k in range(views):
            sample = render_sample(spec, ident, k)
            folder = (
                "bounding_box_train"
                if ident.split == "train"
                else ("query" if k == views - 1 else "bounding_box_test")
            )
            path = rel.root / folder / sample.name
            path.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(path, sample.image, 90)
            rel.images += 1
            rows[ident.split].append(annotation_row(sample.name, sample.keypoints))
            rel.keypoints[sample.name] = sample.keypoints
            names.append(sample.name)
            rel.expect[path.relative_to(rel.root).as_posix()] = "converted: copied"
        rel.names[ident.split] += names
        rel.pairs[ident.split] += _all_pairs(names)
        rel.csv_pairs[ident.split] += _all_pairs(names)
    if faults:
        # Market's junk (0000) and distractor (-1) detections have no annotation row.
        for name in ("0000_c1s1_000151_01.jpg", "-1_c3s2_011346_02.jpg"):
            save_jpeg(rel.root / "bounding_box_test" / name, np.full((128, 64, 3), 90, np.uint8), 90)
            rel.images += 1
            rel.expect[f"bounding_box_test/{name}"] = "no annotation row"
        # A hand-drawn box from gt_bbox/: not one of the field's split folders.
        (rel.root / "gt_bbox").mkdir()
        save_jpeg(rel.root / "gt_bbox" / "0001_c1s1_001051_00.jpg", np.full((140, 60, 3), 120, np.uint8), 90)
        rel.images += 1
        rel.expect["gt_bbox/0001_c1s1_001051_00.jpg"] = "not in any split list"
        (rel.root / "bounding_box_train" / "Thumbs.db").write_bytes(b"\0" * 64)  # Windows leaves these
        # A grey-scale image: converted to RGB, kept.
        grey_name = rel.names["train"][0]
        grey = rel.root / "bounding_box_train" / grey_name
        buf = io.BytesIO()
        Image.open(grey).convert("L").save(buf, format="JPEG", quality=90)
        grey.write_bytes(buf.getvalue())
        rel.expect[f"bounding_box_train/{grey_name}"] = "converted: mode L→RGB"
    _write_csvs(rel, "market", rows)
    return rel
