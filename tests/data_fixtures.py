"""Tiny raw datasets in the field's layouts, written by tests (no generator needed).

``make_raw(root, variant)`` writes ``train/``, ``test/``, annotation and pair CSVs
under any of the file-name variants the adapters accept, with stick figures so
a contact sheet shows something.  ``break_raw`` adds one input per rejection
reason and returns what each broken input's rejects.csv line must say.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from datasets.pose.keypoints import LIMBS
from datasets.specs import DatasetSpec, PreprocessConfig

# (x, y) of OpenPose-18 joints on a unit-height figure centred at x = 0.5.
_BASE = np.array([
    [0.50, 0.12], [0.50, 0.22], [0.38, 0.22], [0.33, 0.38], [0.30, 0.52], [0.62, 0.22], [0.67, 0.38],
    [0.70, 0.52], [0.43, 0.52], [0.42, 0.72], [0.42, 0.92], [0.57, 0.52], [0.58, 0.72], [0.58, 0.92],
    [0.53, 0.10], [0.47, 0.10], [0.56, 0.11], [0.44, 0.11],
], np.float32)

VARIANTS = {
    "fasion": ("deepfashion", "fasion"),
    "fashion": ("deepfashion", "fashion"),
    "fashion-resize": ("deepfashion", "fashion-resize"),
    "market": ("market", "market"),
}


@dataclass
class RawInfo:
    root: Path
    layout: str
    size: tuple[int, int]
    names: dict[str, list[str]] = field(default_factory=dict)  # split -> image names
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # split -> pairs in CSV order
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (x, y) int, -1 missing

    def spec(self, image_size: tuple[int, int] | None = None, shards: str = "") -> DatasetSpec:
        return DatasetSpec(layout=self.layout, root=str(self.root), image_size=image_size or self.size,
                           source_size=self.size, shards=shards or str(self.root) + "-shards")


def image_name(layout: str, ident: int, view: int) -> str:
    if layout == "market":
        return f"{ident:04d}_c{view + 1}s1_{view:06d}_00.jpg"
    return f"fashionWOMENDressesid{ident:08d}_{view + 1}{('front', 'side', 'back', 'full')[view % 4]}.jpg"


def figure_keypoints(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    kp = _BASE * [w, h] + rng.normal(0, 1.0, _BASE.shape) * [w / 40, h / 60]
    kp = np.clip(np.rint(kp), 0, [w - 1, h - 1]).astype(np.int64)
    drop = rng.random(len(kp)) < 0.1
    drop[[0, 1, 14, 15]] = False  # keep the face findable in most fixtures
    kp[drop] = -1
    return kp


def draw_figure(kp: np.ndarray, size: tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
    h, w = size
    img = np.full((h, w, 3), 200, np.uint8)
    img[:, :] = np.linspace(170, 230, h, dtype=np.uint8)[:, None, None]
    for a, b in LIMBS:
        if kp[a].min() >= 0 and kp[b].min() >= 0:
            cv2.line(img, tuple(map(int, kp[a])), tuple(map(int, kp[b])), colour, max(1, w // 30))
    if kp[0].min() >= 0:
        cv2.circle(img, tuple(map(int, kp[0])), max(2, w // 12), (230, 190, 160), -1)
    return img


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(buf.tobytes())


def annotation_line(name: str, kp: np.ndarray) -> str:
    ys = json.dumps([int(v) for v in kp[:, 1]])
    xs = json.dumps([int(v) for v in kp[:, 0]])
    return f"{name}:{ys}:{xs}\n"


def make_raw(root: Path, variant: str = "fasion", size: tuple[int, int] | None = None, train_ids: int = 4,
             test_ids: int = 2, views: int = 3, seed: int = 0) -> RawInfo:
    layout, prefix = VARIANTS[variant]
    size = size or ((64, 32) if layout == "market" else (64, 44))
    rng = np.random.default_rng(seed)
    info = RawInfo(Path(root), layout, size)
    ident = 1
    for split, n_ids in (("train", train_ids), ("test", test_ids)):
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = ["name:keypoints_y:keypoints_x\n"]
        pairs: list[tuple[str, str]] = []
        names: list[str] = []
        for _ in range(n_ids):
            colour = tuple(int(c) for c in rng.integers(20, 160, 3))
            group = [image_name(layout, ident, v) for v in range(views)]
            for name in group:
                kp = figure_keypoints(rng, size)
                write_jpeg(root / split / name, draw_figure(kp, size, colour))
                info.keypoints[name] = kp
                lines.append(annotation_line(name, kp))
            names += group
            if split == "train":
                pairs += [(a, b) for a in group for b in group if a != b]
            else:
                pairs += [(group[0], b) for b in group[1:]]
            ident += 1
        (root / f"{prefix}-annotation-{split}.csv").write_text("".join(lines))
        (root / f"{prefix}-pairs-{split}.csv").write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in pairs))
        info.names[split] = names
        info.pairs[split] = pairs
    return info


def _prefix(root: Path, kind: str, split: str) -> Path:
    found = sorted(root.glob(f"*-{kind}-{split}.csv"))
    assert len(found) == 1, found
    return found[0]


def break_raw(info: RawInfo) -> dict[tuple[str, str], str]:
    """Add one broken train input per rejection reason; returns {(kind, name): reason prefix}."""
    root, size, layout = info.root, info.size, info.layout
    rng = np.random.default_rng(99)
    ann, pairs_csv = _prefix(root, "annotation", "train"), _prefix(root, "pairs", "train")
    good = info.names["train"][0]
    good_kp = info.keypoints[good]
    expected: dict[tuple[str, str], str] = {}
    extra_lines, extra_pairs = [], []

    def add(name: str, reason: str, with_row: bool = True, kp: np.ndarray | None = None) -> None:
        if with_row:
            extra_lines.append(annotation_line(name, good_kp if kp is None else kp))
        expected[("image", name)] = reason
        extra_pairs.append((good, name))
        expected[("pair", f"{good},{name}")] = "target image"

    img = draw_figure(good_kp, size, (90, 40, 40))
    name = image_name(layout, 900, 0)
    (root / "train" / name).write_bytes(b"this is not a JPEG at all" * 10)
    add(name, "unreadable image")
    name = image_name(layout, 901, 0)
    write_jpeg(root / "train" / name, img)
    data = (root / "train" / name).read_bytes()
    (root / "train" / name).write_bytes(data[: len(data) // 2])
    add(name, "truncated image")
    name = image_name(layout, 902, 0)
    (root / "train" / name).write_bytes(b"")
    add(name, "zero-byte file")
    name = image_name(layout, 903, 0)
    write_jpeg(root / "train" / name, cv2.resize(img, (size[1] * 2, size[0] * 2)))
    add(name, "wrong size")
    name = image_name(layout, 904, 0)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    (root / "train" / name).write_bytes(buf.tobytes())
    add(name, "wrong mode")
    name = image_name(layout, 905, 0)
    write_jpeg(root / "train" / name, img)
    add(name, "missing annotation row", with_row=False)
    name = image_name(layout, 906, 0)
    write_jpeg(root / "train" / name, img)
    extra_lines.append(f"{name}:[1, 2, 3]:{json.dumps([int(v) for v in good_kp[:, 0]])}\n")
    expected[("row", name)] = "malformed keypoint cell keypoints_y: expected 18 values"
    add(name, "annotation row rejected: malformed keypoint cell", with_row=False)
    name = image_name(layout, 907, 0)
    write_jpeg(root / "train" / name, img)
    extra_lines.append(f"{name}:{json.dumps(['a'] * 18)}:{json.dumps([int(v) for v in good_kp[:, 0]])}\n")
    expected[("row", name)] = "malformed keypoint cell keypoints_y[0]: not a number"
    add(name, "annotation row rejected: malformed keypoint cell", with_row=False)
    name = image_name(layout, 908, 0)
    write_jpeg(root / "train" / name, img)
    few = np.full_like(good_kp, -1)
    few[:2] = good_kp[:2]
    add(name, "too few visible joints", kp=few)
    name = image_name(layout, 909, 0)
    add(name, "missing image file")  # row, no file
    name = image_name(layout, 910, 0)
    write_jpeg(root / "train" / name, img)
    other = good_kp.copy()
    other[0] = [1, 1]
    extra_lines += [annotation_line(name, good_kp), annotation_line(name, other)]
    expected[("row", name)] = "duplicate name"
    add(name, "duplicate name", with_row=False)
    # A pair to an image that exists nowhere.
    extra_pairs.append((good, "nobody_here.jpg"))
    expected[("pair", f"{good},nobody_here.jpg")] = "target image nobody_here.jpg is not in the train split"
    with open(ann, "a") as fh:
        fh.writelines(extra_lines)
    with open(pairs_csv, "a") as fh:
        fh.writelines(f"{a},{b}\n" for a, b in extra_pairs)
    del rng
    return expected


def tiny_config(**kw) -> PreprocessConfig:
    base = dict(heatmap_sigma=2.0, shard_size=3, jpeg_quality=90, face_size=16, min_visible_joints=4,
                max_reject_fraction=0.9)
    base.update(kw)
    return PreprocessConfig(**base)


def rerecord_shards(shards_dir: Path) -> None:
    """Record every shard's current size and sha256 in the manifest, as if the damaged shards had
    been written that way: what reaches the loader's sample-level checks past its sha256 check."""
    import hashlib
    import json

    path = Path(shards_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    for shard in manifest["shards"]:
        data = (Path(shards_dir) / shard["name"]).read_bytes()
        shard["bytes"], shard["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
