"""Synthetic person data written byte-for-byte in the layout the field's code reads.

Identities get a fixed look (skin, hair, garments, patterns, build); each identity is
shown in ``views_per_identity`` views with its own pose, yaw and framing.  View k
(0-based) is named ``front``, ``side``, ``back``, ``full`` for k < 4 and ``additional``
after, as DeepFashion In-shop names its files.  Output under ``ROOT``::

    ROOT/train/*.jpg, ROOT/test/*.jpg
    ROOT/<prefix>-annotation-{train,test}.csv   name:keypoints_y:keypoints_x  (JSON int lists, y first,
                                                -1 missing)
    ROOT/<prefix>-pairs-{train,test}.csv        from,to
    ROOT/groundtruth/{train,test}/<stem>.npz    part map, part-frame points, garments
                                                (datasets/synthetic/groundtruth.py; not the field's)

Names are ``fashionWOMENDressesid0001234501_2side.jpg`` (prefix ``fasion``) or, for
prefix ``market``, Market-1501's ``0002_c1s3_004155_01.jpg``.  Train and test
identities are drawn from one pool without replacement, so no identity is in both
splits.  Pairs are *all* ordered pairs of distinct views of an identity
(V·(V-1) per identity), in identity then view order.

Every random choice comes from a generator seeded by (seed, split, identity, view),
and JPEGs are written with fixed quality, 4:4:4 chroma and no optimisation, so the
same params give identical bytes.  The dataset is assembled in a hidden sibling
folder and renamed into place only when complete.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image

from datasets.files import staged_dir
from datasets.pose.keypoints import MISSING
from datasets.raw.layout import SPLITS
from datasets.specs import SynthesizeSpec
from datasets.synthetic import groundtruth
from datasets.synthetic.backgrounds import ground_shadow, make_background
from datasets.synthetic.figure_raster import Material
from datasets.synthetic.figure_render import (
    BodyPose,
    BodyView,
    BottomKind,
    FigureAppearance,
    Gender,
    HairStyle,
    PrintShape,
    Sleeves,
    render_figure_canvas,
)
from datasets.synthetic.synthesis_summary import Summary

VIEW_NAMES: tuple[str, ...] = ("front", "side", "back", "full")
JPEG_SUBSAMPLING = 0  # 4:4:4: keeps thin stripes and small faces legible at 128 px

_SKIN: tuple[tuple[float, float, float], ...] = (
    (0.98, 0.86, 0.76),
    (0.95, 0.80, 0.68),
    (0.90, 0.72, 0.58),
    (0.82, 0.62, 0.46),
    (0.70, 0.50, 0.35),
    (0.55, 0.37, 0.25),
    (0.40, 0.26, 0.18),
)
_HAIR = (
    (0.07, 0.05, 0.05),
    (0.20, 0.12, 0.07),
    (0.36, 0.22, 0.12),
    (0.58, 0.40, 0.22),
    (0.86, 0.72, 0.45),
    (0.55, 0.20, 0.08),
    (0.62, 0.62, 0.64),
)
_CLOTH = {
    "navy": (0.13, 0.17, 0.38),
    "black": (0.11, 0.11, 0.12),
    "white": (0.94, 0.94, 0.93),
    "red": (0.80, 0.13, 0.15),
    "burgundy": (0.48, 0.09, 0.17),
    "olive": (0.43, 0.46, 0.20),
    "mustard": (0.88, 0.68, 0.16),
    "teal": (0.08, 0.50, 0.52),
    "pink": (0.95, 0.60, 0.72),
    "beige": (0.86, 0.78, 0.63),
    "grey": (0.55, 0.56, 0.58),
    "denim": (0.25, 0.37, 0.60),
    "khaki": (0.66, 0.61, 0.42),
    "brown": (0.42, 0.27, 0.16),
    "lavender": (0.70, 0.62, 0.86),
    "orange": (0.94, 0.50, 0.15),
    "sky": (0.52, 0.72, 0.92),
    "green": (0.18, 0.55, 0.30),
    "cream": (0.96, 0.92, 0.80),
    "coral": (0.96, 0.46, 0.40),
}
_TROUSER_COLORS = ("denim", "black", "navy", "khaki", "grey", "beige", "brown", "olive")
_SHOES = ((0.08, 0.08, 0.09), (0.35, 0.2, 0.1), (0.93, 0.93, 0.92), (0.7, 0.1, 0.12), (0.6, 0.45, 0.3))


@dataclass(frozen=True)
class FigureIdentity:
    split: str
    index: int  # within its split
    number: int  # the id in file names (DeepFashion item id / Market person id)
    look: FigureAppearance
    category: str


@dataclass(frozen=True)
class FigureSample:
    """One rendered image with its annotation (int keypoints (x, y), -1 missing)."""

    name: str
    split: str
    identity: str
    view: str
    image: np.ndarray
    keypoints: np.ndarray
    groundtruth: groundtruth.GroundTruth | None = None


# --------------------------------------------------------------------------- random looks


def _luma(c: tuple[float, float, float]) -> float:
    return 0.3 * c[0] + 0.59 * c[1] + 0.11 * c[2]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


T = TypeVar("T")


def _choose(rng: np.random.Generator, options: Sequence[T], p: Sequence[float] | None = None) -> T:
    """``rng.choice(options, p=p)`` as the option itself (the same draw: choice picks an index)."""
    return options[int(rng.choice(len(options), p=p))]


def _material(
    rng: np.random.Generator, spec: SynthesizeSpec, colors: tuple[str, ...], pattern_p: float
) -> Material:
    base = _CLOTH[_pick(rng, colors)]
    if rng.random() >= pattern_p or not spec.patterns:
        return Material(base)
    pattern = _pick(rng, spec.patterns)
    # A second colour that contrasts in brightness, so the pattern survives JPEG and 128 px.
    others = [c for c in _CLOTH.values() if abs(_luma(c) - _luma(base)) > 0.28] or [(1.0, 1.0, 1.0)]
    period = {
        "hstripes": (0.035, 0.065),
        "vstripes": (0.035, 0.06),
        "checks": (0.045, 0.075),
        "dots": (0.04, 0.06),
        "solid": (0.05, 0.05),
    }[pattern]
    duty = 0.55 if pattern == "dots" else float(rng.uniform(0.35, 0.55))
    return Material(base, pattern, _pick(rng, others), float(rng.uniform(*period)), duty)


def sample_identity_look(rng: np.random.Generator, spec: SynthesizeSpec) -> tuple[FigureAppearance, str]:
    """One identity's look and its DeepFashion-style clothing category."""
    gender: Gender = "WOMEN" if rng.random() < 0.6 else "MEN"
    women = gender == "WOMEN"
    top_colors = tuple(_CLOTH)
    top = _material(rng, spec, top_colors, spec.pattern_probability)
    bottom_kind: BottomKind = _choose(
        rng,
        ["trousers", "shorts", "skirt", "dress"],
        p=[0.35, 0.15, 0.25, 0.25] if women else [0.78, 0.22, 0.0, 0.0],
    )
    bottom_colors = _TROUSER_COLORS if bottom_kind in ("trousers", "shorts") else top_colors
    bottom = _material(
        rng,
        spec,
        bottom_colors,
        spec.pattern_probability * (0.25 if bottom_kind in ("trousers", "shorts") else 0.8),
    )
    sleeves: Sleeves = _choose(rng, ["none", "short", "long"], p=[0.25, 0.45, 0.3])
    jacket = None
    if bottom_kind != "dress" and rng.random() < 0.18:
        jacket = _material(rng, spec, ("black", "navy", "brown", "khaki", "grey", "olive", "burgundy"), 0.2)
    print_shape: PrintShape = "none"
    if top.pattern == "solid" and jacket is None and rng.random() < 0.45:
        print_shape = _choose(rng, ["disc", "band", "diamond"])
    others = [c for c in _CLOTH.values() if abs(_luma(c) - _luma(top.color)) > 0.3] or [(1.0, 1.0, 1.0)]
    skin = _pick(rng, _SKIN)
    hair_style: HairStyle = _choose(
        rng, ["short", "long", "buzz", "bun"], p=[0.25, 0.5, 0.0, 0.25] if women else [0.68, 0.05, 0.27, 0.0]
    )
    look = FigureAppearance(
        gender=gender,
        skin=skin,
        hair=_pick(rng, _HAIR),
        hair_style=hair_style,
        top=top,
        sleeves=sleeves,
        neckline=_choose(rng, ["round", "v"]),
        print_shape=print_shape,
        print_color=_pick(rng, others),
        jacket=jacket,
        bottom=bottom,
        bottom_kind=bottom_kind,
        hem=float(rng.uniform(0.13, 0.3)),
        shoe=_pick(rng, _SHOES),
        shirt_length=float(rng.uniform(0.72, 0.86)),
        build=float(rng.uniform(0.9, 1.12)),
        lips=(skin[0] * 0.75 + 0.12, skin[1] * 0.45, skin[2] * 0.45),
    )
    return look, _category(rng, look)


def _category(rng: np.random.Generator, look: FigureAppearance) -> str:
    """A DeepFashion In-shop category name that matches the featured garment."""
    women = look.gender == "WOMEN"
    if look.bottom_kind == "dress":
        return "Dresses"
    if look.jacket is not None:
        return "Jackets_Coats" if women else "Jackets_Vests"
    if look.bottom_kind == "skirt" and rng.random() < 0.5:
        return "Skirts"
    if look.bottom_kind == "shorts" and rng.random() < 0.5:
        return "Shorts"
    if look.print_shape != "none":
        return "Graphic_Tees" if women else "Tees_Tanks"
    if look.sleeves == "long":
        return _pick(rng, ("Sweaters", "Blouses_Shirts") if women else ("Sweaters", "Shirts_Polos"))
    if look.bottom_kind == "trousers" and rng.random() < 0.3:
        return "Denim" if look.bottom.color == _CLOTH["denim"] else "Pants"
    return "Tees_Tanks" if look.sleeves == "none" else ("Blouses_Shirts" if women else "Shirts_Polos")


# --------------------------------------------------------------------------- random poses and views

POSE_KINDS: tuple[str, ...] = (
    "stand",
    "walk",
    "arms_out",
    "arms_up",
    "wave",
    "hands_hips",
    "hands_front",
    "wide",
)
_POSE_P = (0.2, 0.26, 0.07, 0.07, 0.1, 0.1, 0.12, 0.08)


def sample_body_pose(rng: np.random.Generator, kind: str | None = None) -> BodyPose:
    """Joint angles of one pose kind, jittered; ``kind`` None draws one."""
    kind = kind or str(rng.choice(POSE_KINDS, p=_POSE_P))
    u = rng.uniform

    def rest_arm():
        return (u(6, 16), u(-8, 10), u(5, 25), u(-5, 5))

    arms = [rest_arm(), rest_arm()]
    legs = [(u(2, 6), u(-4, 4), u(0, 6)), (u(2, 6), u(-4, 4), u(0, 6))]
    lean = (u(-3, 3), u(-2, 3))
    head = (u(-15, 15), u(-6, 6))
    side = int(rng.integers(2))
    if kind == "walk":
        swing = u(15, 30)
        sign = 1 if side else -1
        arms = [(u(5, 12), sign * swing, u(10, 30), 0.0), (u(5, 12), -sign * swing, u(10, 30), 0.0)]
        back = 0 if sign > 0 else 1  # the leg swung back bends at the knee
        legs = [(u(1, 4), -sign * swing * 0.9, 0.0), (u(1, 4), sign * swing * 0.9, 0.0)]
        legs = [(a, f, u(15, 35) if i == back else u(0, 10)) for i, (a, f, _) in enumerate(legs)]
    elif kind == "arms_out":
        arms = [(u(75, 100), u(-10, 15), u(0, 20), 0.0) for _ in range(2)]
    elif kind == "arms_up":
        arms = [(u(145, 170), u(-10, 10), u(0, 25), u(0, 10)) for _ in range(2)]
    elif kind == "wave":
        arms[side] = (u(95, 135), u(-5, 15), 0.0, u(35, 65))
    elif kind == "hands_hips":
        arms = [(u(35, 55), u(-15, 0), 0.0, -u(85, 110)) for _ in range(2)]
    elif kind == "hands_front":
        arms = [(u(5, 20), u(20, 45), u(40, 80), -u(10, 25)) for _ in range(2)]
    elif kind == "wide":
        legs = [(u(10, 18), u(-4, 4), u(0, 8)) for _ in range(2)]
        lean = (u(-6, 6), lean[1])
    return BodyPose(kind, (arms[0], arms[1]), (legs[0], legs[1]), lean, head)


def view_name(k: int) -> str:
    return VIEW_NAMES[k] if k < len(VIEW_NAMES) else "additional"


def sample_view(rng: np.random.Generator, spec: SynthesizeSpec, k: int) -> BodyView:
    """Yaw and framing of view ``k``; some front views are close-ups cut at the legs."""
    name = view_name(k)
    if name == "front":
        yaw = rng.normal(0.0, 10.0)
    elif name == "side":
        yaw = (1 if rng.random() < 0.5 else -1) * rng.uniform(65, 100)
    elif name == "back":
        yaw = 180.0 + rng.normal(0.0, 12.0)
    elif name == "full":
        yaw = float(np.clip(rng.normal(0.0, 25.0), -40, 40))
    else:
        yaw = rng.uniform(-180.0, 180.0)
    h, w = spec.height, spec.width
    body = h * rng.uniform(*spec.figure_scale)
    cx = w / 2 + rng.uniform(-0.05, 0.05) * w
    if name == "front" and rng.random() < spec.crop_probability:
        body = h * rng.uniform(1.25, 1.5)  # close-up: head near the top, the legs leave the frame
        return BodyView(name, float(yaw), float(body), float(cx), float(h * rng.uniform(0.03, 0.07) + body))
    sole = h - (h - body) * rng.uniform(0.3, 0.6)
    return BodyView(name, float(yaw), float(body), float(cx), float(sole))


# --------------------------------------------------------------------------- identities, names, images


def plan_identities(spec: SynthesizeSpec) -> list[FigureIdentity]:
    """All identities, train first.  Ids come from one seeded permutation of the id pool, train
    from its front and test from its back: no id is in both splits, and changing one split's
    size leaves the other split's names (and looks) unchanged."""
    n_train, n_test = spec.train_identities, spec.test_identities
    first = 2 if spec.file_prefix == "market" else 1  # Market's 0000 and -1 are junk/distractor ids
    top = max(1502 if spec.file_prefix == "market" else 100000, first + n_train + n_test)
    pool = np.random.default_rng([spec.seed, 7]).permutation(np.arange(first, top))
    numbers = {"train": pool[:n_train], "test": pool[::-1][:n_test]}
    out = []
    for split in SPLITS:
        for index, number in enumerate(numbers[split]):
            rng = np.random.default_rng([spec.seed, SPLITS.index(split), index, 0])
            look, category = sample_identity_look(rng, spec)
            out.append(FigureIdentity(split, index, int(number), look, category))
    return out


def identity_key(ident: FigureIdentity, spec: SynthesizeSpec) -> str:
    """The identity as the layout's name pattern reads it back from a file name."""
    if spec.file_prefix == "market":
        return f"{ident.number:04d}"
    return f"fashion{ident.look.gender}{ident.category}id{ident.number:08d}01"


def image_name(ident: FigureIdentity, k: int, spec: SynthesizeSpec, rng: np.random.Generator) -> str:
    if spec.file_prefix == "market":
        cam = k % 6 + 1  # views of a person come from different cameras, as in Market-1501
        seq, frame = int(rng.integers(1, 7)), int(rng.integers(1, 999999))
        return f"{ident.number:04d}_c{cam}s{seq}_{frame:06d}_{k // 6 + 1:02d}.jpg"
    return f"{identity_key(ident, spec)}_{k + 1}{view_name(k)}.jpg"


def render_sample(spec: SynthesizeSpec, ident: FigureIdentity, k: int) -> FigureSample:
    """Render view ``k`` of ``ident``: deterministic in (seed, split, identity, view)."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(ident.split), ident.index, k + 1])
    name = image_name(ident, k, spec, rng)
    pose, view = sample_body_pose(rng), sample_view(rng, spec, k)
    ss = spec.supersample
    bg = make_background(spec.background, rng, spec.height * ss, spec.width * ss)
    if spec.background != "clutter":
        ground_shadow(
            bg,
            (view.cx + 0.5) * ss,
            (view.sole_y - 0.01 * view.body_px) * ss,
            0.13 * view.body_px * ss,
            0.025 * view.body_px * ss,
            0.22,
        )
    figure, kp = render_figure_canvas(ident.look, pose, view, bg, ss, record_surface=True)
    canvas = figure.rgb
    assert figure.surface is not None and figure.garment is not None  # record_surface
    truth = groundtruth.from_canvas(figure.owner, figure.surface, figure.garment, ss, view.body_px)
    img = cv2.resize(canvas, (spec.width, spec.height), interpolation=cv2.INTER_AREA) if ss > 1 else canvas
    if spec.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), spec.blur_sigma)
    if spec.noise_std > 0:
        img = img + rng.normal(0.0, spec.noise_std / 255.0, img.shape).astype(np.float32)
    image = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return FigureSample(
        name, ident.split, identity_key(ident, spec), view.name, image, keypoints_to_int(kp), truth
    )


def keypoints_to_int(kp: np.ndarray) -> np.ndarray:
    """Float (x, y) -> int pixels as the annotation stores them; -1 stays -1."""
    out = np.floor(np.asarray(kp, np.float64) + 0.5).astype(np.int64)
    out[(kp[:, 0] == MISSING) | (kp[:, 1] == MISSING)] = MISSING
    return out


def annotation_row(name: str, kp_xy: np.ndarray) -> str:
    """``name:[y…]:[x…]`` with the JSON spacing of the field's CSVs (``[12, -1, …]``)."""
    ys = [int(v) for v in kp_xy[:, 1]]
    xs = [int(v) for v in kp_xy[:, 0]]
    return f"{name}:{json.dumps(ys)}:{json.dumps(xs)}"


def all_pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in names for b in names if a != b]


def save_jpeg(path: Path | io.BytesIO, image: np.ndarray, quality: int) -> None:
    """RGB uint8 -> JPEG with fixed settings (4:4:4, no optimisation), so equal images give equal bytes."""
    Image.fromarray(image).save(
        path, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING, optimize=False, progressive=False
    )


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8 as a reader of the written dataset sees it: encoded as :func:`save_jpeg` writes a
    view, decoded as the shard loader decodes one (OpenCV). An 8×8 block the encoder sees unchanged
    comes back bit for bit as the written view's."""
    buf = io.BytesIO()
    save_jpeg(buf, image, quality)
    bgr = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_dataset(
    spec: SynthesizeSpec, root: str | Path, on_image: Callable[[FigureSample], None] | None = None
) -> Summary:
    """Render the whole dataset into ``root`` atomically (temp sibling folder, then rename)."""
    root = Path(root)
    if root.exists() and not _replaceable(root):
        raise FileExistsError(
            f"{root} exists and holds more than a dataset in this layout; "
            "refusing to replace it (pass an empty or new folder)"
        )
    start = time.perf_counter()
    with staged_dir(root) as tmp:
        images, pairs, identities = _write_into(spec, tmp, on_image)
    return Summary(root, images, pairs, identities, time.perf_counter() - start)


_LAYOUT_ENTRY = re.compile(r"^(train|test|groundtruth|[\w.-]+-(annotation|pairs)-(train|test)\.csv)$")


def _replaceable(root: Path) -> bool:
    """True for an empty folder or one holding only a raw dataset in the field's layout: the
    rename-into-place replaces the whole folder, so anything else in it would be lost."""
    return root.is_dir() and all(_LAYOUT_ENTRY.match(p.name) for p in root.iterdir())


def _write_into(spec: SynthesizeSpec, out: Path, on_image):
    prefix = spec.file_prefix
    images, pairs, identities = {}, {}, {}
    idents = plan_identities(spec)
    for split in SPLITS:
        (out / split).mkdir(parents=True)
        (out / groundtruth.FOLDER / split).mkdir(parents=True)
        rows, pair_rows = ["name:keypoints_y:keypoints_x"], ["from,to"]
        members = [i for i in idents if i.split == split]
        for ident in members:
            names = []
            for k in range(spec.views_per_identity):
                sample = render_sample(spec, ident, k)
                save_jpeg(out / split / sample.name, sample.image, spec.jpeg_quality)
                assert sample.groundtruth is not None  # render_sample records it
                groundtruth.path_for(out, split, sample.name).write_bytes(
                    groundtruth.encode(sample.groundtruth)
                )
                rows.append(annotation_row(sample.name, sample.keypoints))
                names.append(sample.name)
                if on_image is not None:
                    on_image(sample)
            pair_rows += [f"{a},{b}" for a, b in all_pairs(names)]
        _write_text(out / f"{prefix}-annotation-{split}.csv", rows)
        _write_text(out / f"{prefix}-pairs-{split}.csv", pair_rows)
        images[split], pairs[split], identities[split] = len(rows) - 1, len(pair_rows) - 1, len(members)
    return images, pairs, identities


def _write_text(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")
