"""Synthetic portraits in the portrait layout: identities × poses/expressions with exact landmarks.

Each identity draws a face shape (jaw, eyes, brows, nose, mouth proportions), skin
tone, hair style and colour, eye colour, accessories (glasses, earrings), clothes,
a background and a light; each of its views draws a pose (roll, yaw by
foreshortening, scale, translation) and an expression (mouth opening, smile, brow
raise, eye closure).  Within an identity the background and light stay fixed, as
in a video of one sitter, so a pair differs only by pose and expression.

Written layout (``ROOT`` is the dataset root, prefix ``portrait`` by default)::

    ROOT/train/portrait-id00000_00.jpg …   ROOT/test/portrait-id00040_00.jpg …
    ROOT/portrait-landmarks-{train,test}.csv   name:landmarks_y:landmarks_x  (sep ':',
                                               JSON lists of 68 ints, y first, -1 hidden)
    ROOT/portrait-pairs-{train,test}.csv       from,to  (both views of one identity)
    ROOT/groundtruth/{train,test}/<stem>.npz   part map, head-model points (not the field's;
                                               datasets/synthetic/portrait_groundtruth.py)
    ROOT/groundtruth/test/<stem>.edits.npz     the renderer's true edits of each test view
                                               (datasets/synthetic/portrait_true_edits.py)

Identities 0…train-1 are train, the next ``test_identities`` are test; an identity's
parameters depend only on (seed, identity number), so the output is byte-identical
for a seed.  Pairs are all ordered pairs of distinct views of an identity
(V·(V-1) per identity, identity then view order), in both splits, as for the
synthetic person data.  With ``expression_twins`` K > 0 each training view also has K
twins (views V… of the identity, K per view in view order): its head pose with one expression
feature drawn again (one edit at a time), a sitter keeping still while the face moves, paired with that view both ways and
listed after the identity's other pairs.  A pair of distinct views always differs in head pose
too, and every portrait edit asks for a face that moves while the rest stays put.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.faces import edits as face_edits
from datasets.faces.edits import Expression, apply_expression
from datasets.files import staged_dir
from datasets.pose.landmarks import encode_row
from datasets.specs import SynthesizeSpec
from datasets.synthetic import groundtruth, portrait_true_edits

# One summary type and one JPEG writer (4:4:4 chroma keeps the lips and irises of 64-pixel
# faces; no optimisation = fixed bytes) for every generator.
from datasets.synthetic.fashion import jpeg_round_trip, save_jpeg
from datasets.synthetic.portrait_geometry import FaceShape, HeadPose, image_landmarks, neutral_landmarks
from datasets.synthetic.portrait_render import (
    GLASSES,
    HAIR_STYLES,
    PortraitAppearance,
    render,
    render_with_truth,
)
from datasets.synthetic.portrait_true_edits import (
    EXPRESSION_EDITS,
    TRUE_EDITS,
    TrueEdits,
    edit_values,
    requested_landmarks,
    rotated_pose,
    shifted_pose,
)
from datasets.synthetic.synthesis_summary import Summary

SKIN_TONES: tuple[tuple[float, float, float], ...] = (
    (0.97, 0.82, 0.71),
    (0.93, 0.74, 0.6),
    (0.84, 0.62, 0.46),
    (0.68, 0.47, 0.33),
    (0.52, 0.35, 0.25),
    (0.4, 0.27, 0.19),
)
HAIR_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.07, 0.06, 0.06),
    (0.2, 0.12, 0.08),
    (0.38, 0.24, 0.13),
    (0.55, 0.26, 0.12),
    (0.85, 0.68, 0.42),
    (0.62, 0.62, 0.62),
    (0.45, 0.2, 0.45),
)
EYE_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.3, 0.18, 0.09),
    (0.14, 0.09, 0.06),
    (0.28, 0.48, 0.75),
    (0.3, 0.5, 0.3),
    (0.5, 0.4, 0.2),
    (0.5, 0.55, 0.6),
)
_EDIT_OFFSET = 10.0


@dataclass(frozen=True)
class PortraitIdentity:
    number: int
    shape: FaceShape
    appearance: PortraitAppearance


@dataclass(frozen=True)
class PortraitView:
    """One rendered portrait: the image, its exact landmarks and the parameters behind them."""

    image: np.ndarray  # uint8 [H, W, 3] RGB
    landmarks: np.ndarray  # float32 [68, 2] (x, y), -1 hidden/outside
    pose: HeadPose
    expression: Expression
    truth: groundtruth.GroundTruth | None = None  # when rendered with_truth


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _mix(
    rng: np.random.Generator, palette: tuple[tuple[float, float, float], ...], jitter: float
) -> tuple[float, float, float]:
    i = int(rng.integers(len(palette) - 1)) if len(palette) > 1 else 0
    t = rng.random()
    c = (
        (1 - t) * np.asarray(palette[i]) + t * np.asarray(palette[i + 1])
        if rng.random() < 0.5
        else np.asarray(palette[int(rng.integers(len(palette)))])
    )
    return tuple(np.clip(c + rng.normal(0, jitter, 3), 0, 1).tolist())


def sample_identity(seed: int, number: int, background: str) -> PortraitIdentity:
    """Identity ``number`` of the dataset drawn with ``seed`` (independent of the other identities)."""
    rng = np.random.default_rng([seed, number, 0x9E37])
    style = HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))]
    nose_length = _u(rng, 0.58, 0.72)
    shape = FaceShape(
        jaw_top=_u(rng, 0.1, 0.2),
        jaw_length=_u(rng, 1.4, 1.7),
        jaw_power=_u(rng, 1.8, 3.0),
        jaw_taper=_u(rng, 0.0, 0.2),
        cranium_height=_u(rng, 1.7, 1.9),
        hair_volume={"buzz": 0.02, "short": 0.08, "bangs": 0.12, "bob": 0.18, "long": 0.14, "bun": 0.06}[
            style
        ],
        eye_x=_u(rng, 0.41, 0.47),
        eye_width=_u(rng, 0.19, 0.24),
        eye_height=_u(rng, 0.085, 0.13),
        eye_tilt=_u(rng, -0.02, 0.05),
        brow_height=_u(rng, 0.26, 0.36),
        brow_arch=_u(rng, 0.03, 0.09),
        brow_inner=_u(rng, 0.13, 0.19),
        nose_length=nose_length,
        nose_width=_u(rng, 0.16, 0.24),
        nose_protrusion=_u(rng, 0.8, 1.2),
        mouth_y=nose_length + 0.08 + _u(rng, 0.22, 0.32),
        mouth_width=_u(rng, 0.3, 0.42),
        upper_lip=_u(rng, 0.05, 0.09),
        lower_lip=_u(rng, 0.07, 0.12),
        cupid_bow=_u(rng, 0.008, 0.025),
    )
    skin = _mix(rng, SKIN_TONES, 0.02)
    lips = tuple(np.clip(np.asarray(skin) * [0.85, 0.55, 0.55] + [0.05, 0.0, 0.02], 0, 1).tolist())
    hue = rng.uniform(0.15, 0.85, 3)
    # Mostly a background of the opposite brightness to the skin, so the outline reads.
    luma = float(np.dot(skin, (0.299, 0.587, 0.114)))
    bg_dark = rng.random() < (0.75 if luma > 0.55 else 0.15)
    target = _u(rng, 0.08, 0.22) if bg_dark else _u(rng, 0.5, 0.8)
    top = np.clip(hue * target / float(np.dot(hue, (0.299, 0.587, 0.114))), 0.0, 1.0)
    bg = (tuple(top.tolist()), tuple((top * 0.6).tolist()))
    light = (_u(rng, -0.7, 0.7), _u(rng, -0.7, -0.1), 1.0)
    app = PortraitAppearance(
        skin=skin,
        hair=_mix(rng, HAIR_COLOURS, 0.03),
        hair_style=style,
        hairline=_u(rng, -1.1, -0.9),
        eye=EYE_COLOURS[int(rng.integers(len(EYE_COLOURS)))],
        lips=lips,
        clothes=tuple(rng.uniform(0.05, 0.9, 3).tolist()),
        glasses=GLASSES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))],
        glasses_colour=tuple(rng.uniform(0.0, 0.5, 3).tolist()),
        earrings=("none", "stud", "hoop")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))],
        background=background,
        bg_colours=bg,
        bg_seed=int(rng.integers(2**31)),
        light=light,
        ambient=_u(rng, 0.4, 0.55),
    )
    return PortraitIdentity(number, shape, app)


EXPRESSION_FEATURES = ("mouth_open", "smile", "eyes_closed", "brows")


def sample_expression(rng: np.random.Generator) -> Expression:
    """A mix of neutral, open-mouthed, smiling, frowning, surprised and closed-eye faces."""
    mouth = 0.0 if rng.random() < 0.45 else _u(rng, 0.2, 1.0)
    smile = 0.0 if rng.random() < 0.3 else _u(rng, -0.5, 1.0)
    r = rng.random()
    eyes = _u(rng, 0.8, 1.0) if r < 0.12 else (_u(rng, -1.0, 0.0) if r < 0.22 else _u(rng, 0.0, 0.3))
    brows = 0.0 if rng.random() < 0.35 else _u(rng, -1.0, 1.0)
    return Expression(mouth_open=mouth, smile=smile, eyes_closed=eyes, brows=brows)


def sample_head_pose(
    rng: np.random.Generator, size: tuple[int, int], max_yaw_deg: float, max_roll_deg: float
) -> HeadPose:
    """Roll, yaw, scale and shift around the framing of :func:`base_pose`."""
    base = base_pose(size)
    h, w = size
    return HeadPose(
        cx=base.cx + _u(rng, -0.05, 0.05) * w,
        cy=base.cy + _u(rng, -0.04, 0.04) * h,
        scale=base.scale * _u(rng, 0.92, 1.08),
        roll_deg=_u(rng, -max_roll_deg, max_roll_deg),
        yaw_deg=_u(rng, -max_yaw_deg, max_yaw_deg),
    )


def base_pose(size: tuple[int, int]) -> HeadPose:
    """Frontal framing: eyes a little above the centre, head and chin inside the frame."""
    h, w = size
    return HeadPose(cx=(w - 1) / 2.0, cy=0.44 * h, scale=min(h / 4.3, w / 3.4))


def frontal_landmarks(identity: PortraitIdentity, expression: Expression) -> np.ndarray:
    """The frontal (head-frame) landmarks the renderer draws ``identity``'s features through."""
    neutral = neutral_landmarks(identity.shape)
    # Shift off the origin while editing: a head-frame coordinate of exactly -1 (jaw point 0
    # sits at x = -1) would read as "missing".
    return apply_expression(neutral + _EDIT_OFFSET, expression).astype(np.float64) - _EDIT_OFFSET


def render_frontal(
    identity: PortraitIdentity,
    frontal: np.ndarray,
    expression: Expression,
    pose: HeadPose,
    size: tuple[int, int],
    supersample: int = 4,
    with_truth: bool = False,
) -> PortraitView:
    """Render ``identity`` with features through ``frontal`` landmarks, and its image landmarks."""
    jaw_drop = float(frontal[8, 1] - neutral_landmarks(identity.shape)[8, 1])
    args = (identity.shape, identity.appearance, frontal, jaw_drop, pose, size, supersample)
    truth = None
    if with_truth:
        image, truth = render_with_truth(*args)
    else:
        image = render(*args)
    lm = image_landmarks(frontal, identity.shape, jaw_drop, pose, size)
    return PortraitView(image, lm, pose, expression, truth)


def render_view(
    identity: PortraitIdentity,
    expression: Expression,
    pose: HeadPose,
    size: tuple[int, int],
    supersample: int = 4,
    with_truth: bool = False,
) -> PortraitView:
    """Render one view and compute its landmarks from the same parameters (``with_truth``: and
    record its ground truth; the pixels are the same either way)."""
    frontal = frontal_landmarks(identity, expression)
    return render_frontal(identity, frontal, expression, pose, size, supersample, with_truth)


def _edited_view(
    identity: PortraitIdentity,
    view: PortraitView,
    name: str,
    values: tuple[float, float],
    size: tuple[int, int],
    ss: int,
) -> PortraitView:
    """``view`` re-rendered with the edit ``name`` as a renderer parameter."""
    frontal, pose = frontal_landmarks(identity, view.expression), view.pose
    if name in EXPRESSION_EDITS:
        frontal = (
            getattr(face_edits, name)(frontal + _EDIT_OFFSET, values[0]).astype(np.float64) - _EDIT_OFFSET
        )
    elif name == "rotate":
        pose = rotated_pose(pose, face_edits.face_centre(view.landmarks), values[0])
    elif name == "shift":
        pose = shifted_pose(pose, *values)
    else:
        raise ValueError(f"unknown edit {name!r}")
    return render_frontal(identity, frontal, view.expression, pose, size, ss)


def true_edits(
    identity: PortraitIdentity,
    view: PortraitView,
    size: tuple[int, int],
    supersample: int,
    jpeg_quality: int | None = None,
) -> TrueEdits:
    """The renderer's true image of every edit of :data:`TRUE_EDITS` applied to ``view``; with
    ``jpeg_quality``, each as the dataset would have written it (:func:`jpeg_round_trip`).

    The written view is a JPEG: against a lossless edit, its compression noise counts as change
    (a few levels, over 8 on ~3 % of a face's pixels: as many as a smile moves), which the edit
    scores would then read as part of the edit."""
    values, images, requested, rendered = [], [], [], []
    for name, strength, second in TRUE_EDITS:
        v = edit_values(name, strength, second, size)
        edited = _edited_view(identity, view, name, v, size, supersample)
        values.append(v)
        images.append(edited.image if jpeg_quality is None else jpeg_round_trip(edited.image, jpeg_quality))
        requested.append(requested_landmarks(view.landmarks, name, v, size))
        rendered.append(edited.landmarks)
    return TrueEdits(
        tuple(n for n, *_ in TRUE_EDITS),
        np.asarray(values, np.float32),
        np.stack(images),
        np.stack(requested).astype(np.float32),
        np.stack(rendered).astype(np.float32),
    )


def identity_views(
    identity: PortraitIdentity, spec: SynthesizeSpec, with_truth: bool = False
) -> list[PortraitView]:
    """All views of one identity (the first is near-frontal and relaxed, a handy source image)."""
    rng = np.random.default_rng([spec.seed, identity.number, 0x51E])
    size = (spec.height, spec.width)
    views = []
    for v in range(spec.views_per_identity):
        if v == 0:
            pose = sample_head_pose(rng, size, min(spec.max_yaw_deg, 8.0), min(spec.max_roll_deg, 5.0))
            expr = Expression()
        else:
            pose = sample_head_pose(rng, size, spec.max_yaw_deg, spec.max_roll_deg)
            expr = sample_expression(rng)
        views.append(render_view(identity, expr, pose, size, spec.supersample, with_truth))
    return views


TWIN_MIN_CHANGE = 0.3  # a twin's feature moves at least this far (strengths span [-1, 1])


def twin_expression(rng: np.random.Generator, expression: Expression) -> Expression:
    """``expression`` with one of its four features, chosen at random, drawn again from
    :func:`sample_expression` until it moves by at least :data:`TWIN_MIN_CHANGE`: a pair that
    differs in one feature is one edit, learnt without the others changing in the same pixels."""
    name = EXPRESSION_FEATURES[int(rng.integers(len(EXPRESSION_FEATURES)))]
    old = getattr(expression, name)
    for _ in range(16):
        new = getattr(sample_expression(rng), name)
        if abs(new - old) >= TWIN_MIN_CHANGE:
            break
    else:  # a feature whose draws keep landing near it: go to the far end of its range
        new = -1.0 if old > 0 else 1.0
    return dataclasses.replace(expression, **{name: new})


def expression_twins(
    identity: PortraitIdentity, views: list[PortraitView], spec: SynthesizeSpec, with_truth: bool = False
) -> list[PortraitView]:
    """``spec.expression_twins`` renders per view in ``views`` order: its head pose, its expression
    with one feature changed (:func:`twin_expression`).

    Drawn from a generator of their own, so the views themselves are the same with or without them.
    """
    size = (spec.height, spec.width)
    twins = []
    for v, view in enumerate(views):
        for k in range(spec.expression_twins):
            rng = np.random.default_rng([spec.seed, identity.number, 0x7317, v, k])
            twins.append(
                render_view(
                    identity,
                    twin_expression(rng, view.expression),
                    view.pose,
                    size,
                    spec.supersample,
                    with_truth,
                )
            )
    return twins


def image_name(prefix: str, identity: int, view: int) -> str:
    return f"{prefix}-id{identity:05d}_{view:02d}.jpg"


def split_identities(spec: SynthesizeSpec) -> dict[str, range]:
    """Identity numbers of each split: train first, then test (disjoint by construction)."""
    n = spec.train_identities
    return {"train": range(n), "test": range(n, n + spec.test_identities)}


def _write_split(
    root: Path,
    split: str,
    numbers: range,
    spec: SynthesizeSpec,
    on_image: Callable[[PortraitView], None] | None,
) -> tuple[int, int]:
    prefix = spec.file_prefix
    (root / split).mkdir(parents=True)
    (root / groundtruth.FOLDER / split).mkdir(parents=True)
    rows, pairs = ["name:landmarks_y:landmarks_x"], ["from,to"]
    for number in numbers:
        identity = sample_identity(spec.seed, number, spec.background)
        names = [image_name(prefix, number, v) for v in range(spec.views_per_identity)]
        views = identity_views(identity, spec, with_truth=True)
        twins = expression_twins(identity, views, spec, with_truth=True) if split == "train" else []
        k = spec.expression_twins
        twin_names = [image_name(prefix, number, len(views) + i) for i in range(len(twins))]
        for name, view in zip(names + twin_names, views + twins):
            save_jpeg(root / split / name, view.image, spec.jpeg_quality)
            assert view.truth is not None
            groundtruth.path_for(root, split, name).write_bytes(groundtruth.encode(view.truth))
            if split == "test":
                edits = true_edits(
                    identity, view, (spec.height, spec.width), spec.supersample, spec.jpeg_quality
                )
                portrait_true_edits.path_for(root, split, name).write_bytes(portrait_true_edits.encode(edits))
            ys, xs = encode_row(view.landmarks, (spec.height, spec.width))
            rows.append(f"{name}:{ys}:{xs}")
            if on_image is not None:
                on_image(view)
        pairs += [f"{a},{b}" for a in names for b in names if a != b]
        for i, twin in enumerate(twin_names):  # a twin pairs with its own view only
            pairs += [f"{names[i // k]},{twin}", f"{twin},{names[i // k]}"]
    for path, lines in (
        (root / f"{prefix}-landmarks-{split}.csv", rows),
        (root / f"{prefix}-pairs-{split}.csv", pairs),
    ):
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(lines) + "\n")
    return len(rows) - 1, len(pairs) - 1


def write_dataset(
    spec: SynthesizeSpec, root: str | Path, on_image: Callable[[PortraitView], None] | None = None
) -> Summary:
    """Write the whole dataset to ``root`` atomically (hidden sibling folder, then rename)."""
    if spec.generator != "portrait":
        raise ValueError(f"synthetic_portrait needs generator 'portrait', got {spec.generator!r}")
    start = time.perf_counter()
    root = Path(root)
    images, pairs, identities = {}, {}, {}
    with staged_dir(root) as tmp:
        for split, numbers in split_identities(spec).items():
            images[split], pairs[split] = _write_split(tmp, split, numbers, spec, on_image)
            identities[split] = len(numbers)
    return Summary(root, images, pairs, identities, time.perf_counter() - start)
