"""Deterministic renderer of people-like articulated figures with exactly known keypoints.

A figure is a 3-D skeleton (OpenPose-18 joints plus head, hands, feet) posed by a
handful of joint angles, turned by a view yaw and projected orthographically.  Body
parts are drawn with the primitives of :mod:`datasets.synthetic.figure_raster`: limbs as
tapered capsules, the torso and skirt as tapered rounded ribbons, and here the head,
an ellipsoid whose surface carries hair, eyes, brows and mouth.  Clothing patterns
are evaluated in *body* coordinates (distance along the part, angle around it), so
stripes, checks and dots move and turn with the body instead of staying fixed on
the screen.

Parts are sorted back to front and composited through a z-buffer, which resolves
self-occlusion between parts that interpenetrate (thighs under the torso, the far
arm behind the chest in a side view).  The z-buffer also records which part owns
each pixel: a joint counts as visible when the part in front of it is one the
joint belongs to, so hidden joints (the far elbow in a side view, a wrist behind
the back) are annotated -1, as are the face points turned away from the camera
and every joint outside the frame.

Coordinates: body units are fractions of the standing height, origin at the
pelvis (mid-hips), y down, z pointing where the body faces; the person's right is
-x.  Image keypoints are (x, y) with pixel centres at integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from datasets.pose.keypoints import JOINT_INDEX, MISSING, NUM_JOINTS
from datasets.synthetic.figure_raster import (
    RGB,
    Band,
    FigureCanvas,
    Material,
    Projector,
    RibbonShape,
    choose,
    draw_capsule,
    draw_disc,
    draw_ribbon,
    lighting,
    material_rgb,
    plain_colors,
    rot_y,
    smooth_band,
)

# --------------------------------------------------------------------------- looks and poses

Gender = Literal["WOMEN", "MEN"]
HairStyle = Literal["short", "long", "buzz", "bun"]
Sleeves = Literal["none", "short", "long"]
Neckline = Literal["round", "v"]
PrintShape = Literal["none", "disc", "band", "diamond"]
BottomKind = Literal["trousers", "shorts", "skirt", "dress"]


@dataclass(frozen=True)
class FigureAppearance:
    """Everything that stays fixed across the views of one identity."""

    gender: Gender
    skin: RGB
    hair: RGB
    hair_style: HairStyle
    top: Material
    sleeves: Sleeves
    neckline: Neckline
    print_shape: PrintShape
    print_color: RGB
    jacket: Material | None
    bottom: Material
    bottom_kind: BottomKind
    hem: float  # skirt/dress hem below the hips, body units
    shoe: RGB
    shirt_length: float  # torso fraction (0 = shoulders, 1 = crotch) where the top ends
    build: float  # width multiplier
    lips: RGB


@dataclass(frozen=True)
class BodyPose:
    """Joint angles in degrees.  Arms: (abduction, flexion, elbow, forearm abduction offset);
    legs: (abduction, flexion, knee).  Index 0 is the person's right side."""

    kind: str
    arms: tuple[tuple[float, float, float, float], tuple[float, float, float, float]]
    legs: tuple[tuple[float, float, float], tuple[float, float, float]]
    lean: tuple[float, float]  # sideways, forwards
    head: tuple[float, float]  # turn (yaw relative to body), tilt (roll)


@dataclass(frozen=True)
class BodyView:
    """Camera for one image: yaw of the body and where the standing body lands in the frame."""

    name: str
    yaw: float  # degrees; 0 faces the camera, 180 shows the back, ±90 a profile
    body_px: float  # standing height (head top to sole) in output pixels
    cx: float  # pelvis x in output pixels
    sole_y: float  # y of the soles of a standing figure, output pixels


# --------------------------------------------------------------------------- skeleton


def _limb_dir(abduct: float, flex: float, side: float) -> np.ndarray:
    """Unit direction of a limb hanging down (0, 0), swung out by ``abduct`` and forward by ``flex``."""
    a, f = math.radians(abduct), math.radians(flex)
    return np.array([side * math.sin(a) * math.cos(f), math.cos(a) * math.cos(f), math.sin(f)])


def _rot_z(deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


HEAD_R = 0.062  # horizontal head radius; vertical is HEAD_ELONG times that
HEAD_ELONG = 1.16
# Face points in head-local units of HEAD_R (x to the person's left, y down, z forward).
_FACE_POINTS = {
    "nose": np.array([0.0, 0.28, 1.02]),
    "Leye": np.array([0.36, -0.02, 0.92]),
    "Reye": np.array([-0.36, -0.02, 0.92]),
    "Lear": np.array([1.0, 0.08, -0.05]),
    "Rear": np.array([-1.0, 0.08, -0.05]),
}
# Smallest facing (view-space z of the surface normal) at which a face point counts as seen.
_FACING_MIN = {"nose": -0.05, "Leye": 0.12, "Reye": 0.12, "Lear": -0.35, "Rear": -0.35}


def skeleton(app: FigureAppearance, pose: BodyPose) -> dict[str, np.ndarray]:
    """3-D points (body units) of the joints, limb ends and head centre."""
    w = app.build
    sh_x = (0.112 if app.gender == "MEN" else 0.100) * w
    hip_x = (0.068 if app.gender == "MEN" else 0.074) * w
    pts: dict[str, np.ndarray] = {}
    upper = _rot_z(pose.lean[0]) @ _rot_x(pose.lean[1])  # lean turns the upper body about the pelvis
    pts["neck"] = upper @ np.array([0.0, -0.322, 0.0])
    for side, tag, (ab, fl, elbow, fore_ab) in ((-1.0, "R", pose.arms[0]), (1.0, "L", pose.arms[1])):
        sho = upper @ np.array([side * sh_x, -0.31, 0.0])
        elb = sho + 0.165 * (upper @ _limb_dir(ab, fl, side))
        fore = upper @ _limb_dir(ab + fore_ab, fl + elbow, side)
        pts[tag + "sho"], pts[tag + "elb"] = sho, elb
        pts[tag + "wri"] = elb + 0.145 * fore
        pts[tag + "hand"] = pts[tag + "wri"] + 0.06 * fore
    for side, tag, (ab, fl, knee) in ((-1.0, "R", pose.legs[0]), (1.0, "L", pose.legs[1])):
        hip = np.array([side * hip_x, 0.0, 0.0])
        kne = hip + 0.225 * _limb_dir(ab, fl, side)
        ank = kne + 0.222 * _limb_dir(ab * 0.6, fl - knee, side)
        pts[tag + "hip"], pts[tag + "kne"], pts[tag + "ank"] = hip, kne, ank
        pts[tag + "heel"] = ank + np.array([0.0, 0.035, -0.018])
        pts[tag + "toe"] = ank + np.array([side * 0.006, 0.043, 0.085])
    pts["head"] = pts["neck"] + _rot_z(pose.head[1]) @ (upper @ np.array([0.0, -0.112, 0.008]))
    return pts


# Garment ids of the recorded garment map (0: background or no garment); index = id.
GARMENTS: tuple[str, ...] = ("none", "skin", "hair", "top", "bottom", "jacket", "shoes")
_GID = {n: i for i, n in enumerate(GARMENTS)}


def _top_end(app: FigureAppearance, torso_len: float) -> float:
    """Where the top ends along the torso (a dress runs past the crotch)."""
    return app.shirt_length * torso_len if app.bottom_kind != "dress" else 2 * torso_len


def _neck_mask(app: FigureAppearance, angle, s):
    if app.neckline == "round":
        neck_depth = 0.03 * np.clip(1 - (angle / 0.6) ** 2, 0, 1)
    else:
        neck_depth = 0.075 * np.clip(1 - np.abs(angle) / 0.45, 0, 1)
    return (np.abs(angle) < 0.6) & (s < neck_depth)


def _jacket_mask(arc, s, top_end: float):
    opening = np.abs(arc) < 0.028 + 0.25 * s  # open at the front, so the top shows only there
    return ~opening & (s < top_end + 0.03)


def _torso_garments(app: FigureAppearance, torso_len: float):
    """Garment-id function of the torso, region for region as :func:`_torso_colors` paints it."""

    def garments(angle, r_body, s):
        top_end = _top_end(app, torso_len)
        out = np.where(s >= top_end, _GID["top" if app.bottom_kind == "dress" else "bottom"], _GID["top"])
        neck_m = _neck_mask(app, angle, s)
        if app.jacket is not None:
            jacket_m = _jacket_mask(angle * r_body, s, top_end)
            out = np.where(jacket_m, _GID["jacket"], out)
            neck_m &= ~jacket_m
        return np.where(neck_m, _GID["skin"], out).astype(np.uint8)

    return garments


def _torso_colors(app: FigureAppearance, torso_len: float):
    """Colour function of the torso: top (with neckline, print, open jacket) over the bottom."""

    def colors(angle, r_body, s, fw_arc, fw_s):
        arc = angle * r_body
        top = material_rgb(app.top, arc, s, fw_arc, fw_s)
        if app.print_shape != "none" and app.jacket is None:
            px, py = arc, s - 0.11
            if app.print_shape == "disc":
                m = np.clip((0.04 - np.hypot(px, py)) / fw_s + 0.5, 0, 1)
            elif app.print_shape == "diamond":
                m = np.clip((0.045 - np.abs(px) - np.abs(py)) / fw_s + 0.5, 0, 1)
            else:
                m = smooth_band(py, 0.018, fw_s) * smooth_band(px, 0.11, fw_arc)
            top = top + (np.asarray(app.print_color, np.float32) - top) * m[..., None]
        skin = np.asarray(app.skin, np.float32)
        neck_m = _neck_mask(app, angle, s)
        bottom_mat = app.top if app.bottom_kind == "dress" else app.bottom
        bottom = material_rgb(bottom_mat, arc, s, fw_arc, fw_s)
        top_end = _top_end(app, torso_len)
        out = choose([(s >= top_end, bottom)], top)
        if app.jacket is not None:
            jacket_m = _jacket_mask(arc, s, top_end)
            out = choose([(jacket_m, material_rgb(app.jacket, arc, s, fw_arc, fw_s))], out)
            neck_m &= ~jacket_m
        out = choose([(neck_m, skin)], out)
        # Waistband: a darker line where the top meets the bottom.
        belt = smooth_band(s - top_end, 0.006, fw_s)
        return out * (1.0 - 0.3 * belt)[..., None]

    return colors


def draw_head(
    ctx: Projector, owner: int, app: FigureAppearance, center3: np.ndarray, yaw_total: float, roll: float
) -> None:
    """Ellipsoid head: skin, hair by a hairline in head coordinates, eyes, brows and mouth."""
    c = ctx.to_view(center3)
    k = ctx.px_per_unit
    R = HEAD_R * k
    cap = 1.09 if app.hair_style in ("long", "bun", "short") else 1.02  # hair volume over the skull
    ext = R * HEAD_ELONG * cap + 2
    g = ctx.canvas.grid(c[0] - ext, c[1] - ext, c[0] + ext, c[1] + ext)
    if g is None:
        return
    sl, X, Y = g
    cr, sr = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rx, ry = (X - c[0]) / R, (Y - c[1]) / R
    hx, hy = cr * rx - sr * ry, sr * rx + cr * ry  # un-rolled, in head radii
    hy = hy / HEAD_ELONG
    r2 = hx * hx + hy * hy
    skull_alpha = np.clip((1.0 - np.sqrt(r2)) * R + 0.5, 0.0, 1.0)
    # Hair volume: a slightly larger ellipse, shifted up, kept over the upper head only.
    cy_shift = 0.1
    r_cap = np.sqrt(hx * hx + (hy + cy_shift) ** 2) / cap
    cap_alpha = np.clip((1.0 - r_cap) * R + 0.5, 0.0, 1.0) * np.clip((0.25 - hy) * R + 0.5, 0.0, 1.0)
    if app.hair_style == "buzz":
        cap_alpha = cap_alpha * 0.0
    alpha = np.maximum(skull_alpha, cap_alpha)
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    # Head-local surface point: undo the view and head yaw.
    t = math.radians(yaw_total)
    lx = hx * math.cos(t) - nz * math.sin(t)
    lz = hx * math.sin(t) + nz * math.cos(t)
    ly = hy
    fw = 1.0 / R / np.maximum(nz, 0.3)
    hair_m = _hair_mask(app, lx, ly, lz, fw, skull_alpha)
    hair = np.asarray(app.hair, np.float32)
    hair_col = hair if app.hair_style != "buzz" else 0.55 * hair + 0.45 * np.asarray(app.skin, np.float32)
    color = _face_albedo(app, lx, ly, lz, fw)
    color = color + (hair_col - color) * hair_m[..., None]
    lit = lighting(ctx, hx, hy, nz)
    depth = c[2] + R * nz
    surface = garment = None
    if ctx.canvas.surface is not None:
        # Head-local surface point (view yaw, head turn and roll undone); the hair volume outside
        # the skull has no surface point of its own.
        surface = (np.stack([lx, ly * HEAD_ELONG, lz], axis=-1) * HEAD_R).astype(np.float32)
        surface[r2 > 1.0] = np.nan
        garment = np.where(hair_m > 0.5, _GID["hair"], _GID["skin"]).astype(np.uint8)
    ctx.canvas.paint(
        sl,
        alpha,
        color * lit[..., None],
        depth,
        owner,
        surface=surface,
        garment=0 if garment is None else garment,
    )


def _hair_mask(app: FigureAppearance, lx, ly, lz, fw, skull_alpha) -> np.ndarray:
    """How much of each head pixel is hair, from the head-local surface point (lx, ly, lz)."""
    # Hairline: low at the forehead, dropping to the nape at the back of the head.
    back = np.clip((0.3 - lz) / 1.1, 0.0, 1.0)
    line = -0.42 + 1.05 * back + (0.15 * np.abs(lx) if app.hair_style != "long" else 0.0)
    if app.hair_style == "long":
        line = np.maximum(line, np.where(np.abs(lx) > 0.78, 0.75, line))
    if app.hair_style == "buzz":
        line = line - 0.1
    hair_m = np.clip((line - ly) / fw + 0.5, 0.0, 1.0)
    return np.where(skull_alpha > 0.5, hair_m, 1.0)  # the cap outside the skull is all hair


def _face_albedo(app: FigureAppearance, lx, ly, lz, fw) -> np.ndarray:
    """Skin with the nose's shade, lips, brows and eyes, drawn only where the face looks forward."""
    skin = np.asarray(app.skin, np.float32)
    hair = np.asarray(app.hair, np.float32)
    facing = lz > 0.2
    eyes = np.zeros_like(lx)
    for ex in (-0.36, 0.36):
        eyes = np.maximum(eyes, np.clip((0.15 - np.hypot(lx - ex, (ly + 0.02) * 1.3)) / fw + 0.5, 0, 1))
    brows = np.zeros_like(lx)
    for ex in (-0.36, 0.36):
        brows = np.maximum(brows, smooth_band(ly + 0.24, 0.045, fw) * smooth_band(lx - ex, 0.17, fw))
    mouth = smooth_band(ly - 0.55 - 0.12 * lx * lx, 0.05, fw) * smooth_band(lx, 0.22, fw)
    nose = np.clip((0.11 - np.hypot(lx, ly - 0.3)) / fw + 0.5, 0, 1) * 0.5
    color = np.broadcast_to(skin, lx.shape + (3,)).astype(np.float32)
    for m, col in (
        (nose, skin * 0.72),
        (mouth, np.asarray(app.lips, np.float32)),
        (brows, hair * 0.8),
        (eyes, np.array([0.08, 0.06, 0.06], np.float32)),
    ):
        m = np.where(facing, m, 0.0)
        color = color + (col - color) * m[..., None]
    return color


# --------------------------------------------------------------------------- the figure

BODY_PARTS: tuple[str, ...] = (
    "torso",
    "pelvis",
    "skirt",
    "neck",
    "head",
    "hair",
    "bun",
    "ear_R",
    "ear_L",
    "upper_R",
    "fore_R",
    "hand_R",
    "upper_L",
    "fore_L",
    "hand_L",
    "thigh_R",
    "shin_R",
    "foot_R",
    "thigh_L",
    "shin_L",
    "foot_L",
)
_PID = {n: i for i, n in enumerate(BODY_PARTS)}

# Parts a joint belongs to: these never count as hiding it.
_INCIDENT: dict[str, tuple[str, ...]] = {
    "nose": ("head", "ear_R", "ear_L"),
    "Leye": ("head", "ear_R", "ear_L"),
    "Reye": ("head", "ear_R", "ear_L"),
    "Lear": ("head", "ear_L", "hair"),
    "Rear": ("head", "ear_R", "hair"),
    # The neck point lies between the shoulders: a profile's near shoulder covers it, yet every
    # annotator (and OpenPose) still marks it, so the upper arms do not hide it.
    "neck": ("torso", "neck", "head", "hair", "upper_R", "upper_L"),
}
for _s in "RL":
    _INCIDENT[_s + "sho"] = ("torso", "neck", "hair", "upper_" + _s)
    _INCIDENT[_s + "elb"] = ("upper_" + _s, "fore_" + _s)
    _INCIDENT[_s + "wri"] = ("fore_" + _s, "hand_" + _s)
    _INCIDENT[_s + "hip"] = ("torso", "pelvis", "skirt", "thigh_" + _s)
    _INCIDENT[_s + "kne"] = ("thigh_" + _s, "shin_" + _s, "skirt")
    _INCIDENT[_s + "ank"] = ("shin_" + _s, "foot_" + _s, "skirt")

_JOINT_RADIUS = {"sho": 0.03, "elb": 0.025, "wri": 0.02, "hip": 0.05, "kne": 0.038, "ank": 0.026}


def _arm_bands(app: FigureAppearance, upper: bool) -> list[Band]:
    skin = Material(app.skin)
    cloth = app.jacket or app.top
    sleeves = "long" if app.jacket is not None else app.sleeves
    if sleeves == "long":
        return [(1.0, cloth)]
    if sleeves == "short" and upper:
        return [(0.5, cloth), (1.0, skin)]
    return [(1.0, skin)]


def _leg_bands(app: FigureAppearance, thigh: bool) -> list[Band]:
    skin, shoe = Material(app.skin), Material(app.shoe)
    if app.bottom_kind == "trousers":
        return [(1.0, app.bottom)] if thigh else [(0.93, app.bottom), (1.0, shoe)]
    if app.bottom_kind == "shorts" and thigh:
        return [(0.55, app.bottom), (1.0, skin)]
    return [(1.0, skin)] if thigh else [(0.92, skin), (1.0, shoe)]


def _band_garments(bands: list[Band], known: tuple[tuple[Material | None, str], ...]) -> tuple[int, ...]:
    """Garment id of each band, by which of the look's ``known`` materials it is (first match)."""
    return tuple(next(_GID[g] for m, g in known if m == mat) for _, mat in bands)


def render_figure(
    app: FigureAppearance, pose: BodyPose, view: BodyView, background: np.ndarray, supersample: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one figure over ``background`` (float RGB at the supersampled size).

    Returns the canvas (float RGB, supersampled) and keypoints float32 [18, 2] (x, y)
    in *output* pixels, -1 for joints hidden, turned away or outside the frame.
    """
    canvas, kp = render_figure_canvas(app, pose, view, background, supersample)
    return canvas.rgb, kp


# A part of the figure: its depth (sort key, back to front) and the call that draws it (called
# without arguments; the limbs and ears bind theirs as defaults).
_Part = tuple[float, Callable[..., object]]


@dataclass(frozen=True)
class _Scene:
    """What every part of one figure is drawn from: the look, the posed skeleton and the camera."""

    app: FigureAppearance
    pts: dict[str, np.ndarray]
    ctx: Projector
    yaw_head: float  # view yaw plus the head's turn
    roll: float  # the head's roll as seen in the image plane

    def depth(self, p: np.ndarray) -> float:
        return float((self.ctx.rot @ p)[2])


def render_figure_canvas(
    app: FigureAppearance,
    pose: BodyPose,
    view: BodyView,
    background: np.ndarray,
    supersample: int,
    record_surface: bool = False,
    shading: bool = True,
) -> tuple[FigureCanvas, np.ndarray]:
    """:func:`render_figure`, returning the whole canvas: with ``record_surface`` its owner part,
    part-frame point and garment of every pixel too (the same colours either way); ``shading``
    False draws albedo only (the correspondence tests)."""
    ctx = _projector(view, background, supersample, record_surface, shading)
    scene = _Scene(
        app,
        skeleton(app, pose),
        ctx,
        yaw_head=view.yaw + pose.head[0],
        roll=(pose.lean[0] + pose.head[1]) * math.cos(math.radians(view.yaw)),
    )
    torso_top, torso_bot = _torso_ends(scene.pts)
    torso = _torso_shape(app, view.yaw)
    head_rot = rot_y(pose.head[0])
    face_v = _face_points(scene, head_rot)
    # Built in this order because sorting by depth is stable: parts at equal depth keep it.
    parts = [
        _torso_part(scene, torso, torso_top, torso_bot),
        *_skirt_parts(scene, torso, view.yaw),
        *_limb_parts(scene),
        _neck_part(scene),
        *_head_parts(scene, head_rot, face_v),
    ]
    for _, fn in sorted(parts, key=lambda item: item[0]):
        fn()
    return ctx.canvas, _annotate(ctx, scene.pts, face_v, scene.yaw_head, supersample)


def _projector(
    view: BodyView, background: np.ndarray, ss: int, record_surface: bool, shading: bool
) -> Projector:
    """The camera of ``view`` on a supersampled canvas over ``background``."""
    unit = view.body_px * ss
    cx = (view.cx + 0.5) * ss - 0.5
    cy = (view.sole_y - 0.5 * view.body_px + 0.5) * ss - 0.5
    return Projector(
        FigureCanvas(background, record_surface), unit, view.yaw, rot_y(view.yaw), cx, cy, shading
    )


def _torso_ends(pts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Top (just above the shoulders' midpoint, towards the neck) and bottom of the torso ribbon."""
    mid_sho = 0.5 * (pts["Rsho"] + pts["Lsho"])
    torso_top = mid_sho + (pts["neck"] - mid_sho) * 0.2 + np.array([0.0, -0.012, 0.0])
    torso_bot = np.array([0.0, 0.06, 0.0])  # down to the crotch, covering the thigh tops
    return torso_top, torso_bot


def _torso_shape(app: FigureAppearance, yaw: float) -> RibbonShape:
    w = app.build
    women = app.gender == "WOMEN"
    sh_w = (0.125 if not women else 0.112) * w
    return RibbonShape(
        widths=(
            (0.0, sh_w, 0.07 * w),
            (0.3, sh_w * 0.93, 0.075 * w),
            (0.62, (0.092 if not women else 0.078) * w, 0.062 * w),
            (1.0, (0.118 if not women else 0.128) * w, 0.072 * w),
        ),  # hips cover the thigh tops
        corner=0.035,
        yaw=yaw,
    )


def _torso_part(scene: _Scene, torso: RibbonShape, top: np.ndarray, bot: np.ndarray) -> _Part:
    app = scene.app
    torso_len = float(np.linalg.norm(bot - top))
    return (
        scene.depth(np.zeros(3)) - 0.01,
        lambda: draw_ribbon(
            scene.ctx,
            _PID["torso"],
            top,
            bot,
            torso,
            _torso_colors(app, torso_len),
            region_garments=_torso_garments(app, torso_len),
        ),
    )


def _skirt_parts(scene: _Scene, torso: RibbonShape, yaw: float) -> list[_Part]:
    """A skirt or dress: a ribbon from the waist to the hem, flaring to the legs' spread."""
    app, pts = scene.app, scene.pts
    if app.bottom_kind not in ("skirt", "dress"):
        return []
    w = app.build
    bottom_mat = app.top if app.bottom_kind == "dress" else app.bottom
    spread = max(abs(pts["Rkne"][0] - pts["Lkne"][0]), abs(pts["Rank"][0] - pts["Lank"][0]) * 0.8)
    fwd = max(abs(pts["Rkne"][2] - pts["Lkne"][2]), 0.0)
    top_w = torso.widths[-1][1] * 1.02
    hem_w = max(top_w * 1.22, 0.5 * spread + 0.05)
    # Shallow front so hands hanging beside the skirt stay in front of it.
    skirt = RibbonShape(
        ((0.0, top_w, 0.066 * w), (1.0, hem_w, max(0.075 * w, 0.5 * fwd + 0.045))),
        corner=0.015,
        yaw=yaw,
    )
    legs = (_PID["torso"],) + tuple(_PID[p + t] for p in ("thigh_", "shin_") for t in "RL")
    return [
        (
            1.0,
            lambda: draw_ribbon(  # last: it covers the legs, the z-test keeps hands in front
                scene.ctx,
                _PID["skirt"],
                np.array([0.0, -0.05, 0.0]),
                np.array([0.0, app.hem, 0.0]),
                skirt,
                plain_colors(bottom_mat),
                covers=legs,
                region_garments=_GID["bottom"],
            ),
        )
    ]


def _limb_parts(scene: _Scene) -> list[_Part]:
    """Arms, hands, legs and feet as capsules: the person's right side first, then the left."""
    app, pts = scene.app, scene.pts
    w = app.build
    # The materials an arm's or a leg's bands are chosen from (a jacket's sleeves before the top).
    arm_known = ((Material(app.skin), "skin"), (app.jacket, "jacket"), (app.top, "top"))
    leg_known = ((Material(app.skin), "skin"), (Material(app.shoe), "shoes"), (app.bottom, "bottom"))
    parts: list[_Part] = []
    for tag in "RL":
        for name, a, b, r0, r1, bands in (
            ("upper_", "sho", "elb", 0.033, 0.027, _arm_bands(app, True)),
            ("fore_", "elb", "wri", 0.026, 0.019, _arm_bands(app, False)),
            ("hand_", "wri", "hand", 0.02, 0.016, [(1.0, Material(app.skin))]),
            ("thigh_", "hip", "kne", 0.056, 0.04, _leg_bands(app, True)),
            ("shin_", "kne", "ank", 0.039, 0.026, _leg_bands(app, False)),
            ("foot_", "heel", "toe", 0.026, 0.022, [(1.0, Material(app.shoe))]),
        ):
            p0, p1 = pts[tag + a], pts[tag + b]
            bias = -0.03 if name in ("thigh_", "shin_") else 0.0  # legs sit under the torso's hem
            garments = _band_garments(bands, arm_known if name in ("upper_", "fore_", "hand_") else leg_known)
            parts.append(
                (
                    0.5 * (scene.depth(p0) + scene.depth(p1)) + bias,
                    lambda n=name, t=tag, p0=p0, p1=p1, r0=r0, r1=r1, bd=bands, gs=garments: draw_capsule(
                        scene.ctx, _PID[n + t], p0, p1, r0 * w, r1 * w, bd, garments=gs
                    ),
                )
            )
    return parts


def _neck_part(scene: _Scene) -> _Part:
    app, pts = scene.app, scene.pts
    return (
        scene.depth(pts["neck"]) + 0.001,
        lambda: draw_capsule(
            scene.ctx,
            _PID["neck"],
            pts["neck"] + [0, 0.012, 0],
            pts["head"] + [0, 0.02, 0],
            0.027,
            0.026,
            [(1.0, Material(app.skin))],
            garments=(_GID["skin"],),
        ),
    )


def _face_points(scene: _Scene, head_rot: np.ndarray) -> dict[str, np.ndarray]:
    """Face points on the head, projected, then turned by the head's roll exactly as draw_head does."""
    head_c = scene.pts["head"]
    return {
        n: _rolled(scene, head_c + head_rot @ (p * HEAD_R * np.array([1.0, HEAD_ELONG, 1.0])))
        for n, p in _FACE_POINTS.items()
    }


def _rolled(scene: _Scene, p3: np.ndarray) -> np.ndarray:
    """Body point ``p3`` on the canvas, turned about the head's centre by the head's roll."""
    return _roll_about(scene.ctx.to_view(p3), scene.ctx.to_view(scene.pts["head"]), scene.roll)


def _head_parts(scene: _Scene, head_rot: np.ndarray, face_v: dict[str, np.ndarray]) -> list[_Part]:
    """Long hair behind the head, the head, the ears (unless long hair covers them) and a bun."""
    app, ctx = scene.app, scene.ctx
    head_c = scene.pts["head"]
    parts: list[_Part] = []
    if app.hair_style == "long":
        hair_shape = RibbonShape(
            ((0.0, 1.0 * HEAD_R, 0.8 * HEAD_R), (1.0, 1.3 * HEAD_R, 0.6 * HEAD_R)),
            corner=0.03,
            yaw=scene.yaw_head,
        )
        h0 = head_c + head_rot @ np.array([0.0, -0.01, -0.035])
        h1 = head_c + head_rot @ np.array([0.0, 0.17, -0.075])
        parts.append(
            (
                scene.depth(head_c + head_rot @ np.array([0.0, 0.0, -0.09])),
                lambda: draw_ribbon(
                    ctx,
                    _PID["hair"],
                    h0,
                    h1,
                    hair_shape,
                    plain_colors(Material(app.hair)),
                    region_garments=_GID["hair"],
                ),
            )
        )
    parts.append(
        (
            scene.depth(head_c) + 0.02,
            lambda: draw_head(ctx, _PID["head"], app, head_c, scene.yaw_head, scene.roll),
        )
    )
    for tag in "RL" if app.hair_style != "long" else "":  # long hair covers the ears
        parts.append(
            (
                scene.depth(head_c) + 0.021,
                lambda t=tag: draw_disc(
                    ctx,
                    _PID["ear_" + t],
                    face_v[t + "ear"],
                    0.2 * HEAD_R,
                    app.skin,
                    squash=0.75,
                    bias=0.3 * HEAD_R * ctx.px_per_unit,
                    garment=_GID["skin"],
                ),
            )
        )
    if app.hair_style == "bun":
        bun3 = head_c + head_rot @ np.array([0.0, -0.06, -0.045])
        parts.append(
            (
                scene.depth(bun3),
                lambda: draw_disc(
                    ctx, _PID["bun"], _rolled(scene, bun3), 0.45 * HEAD_R, app.hair, garment=_GID["hair"]
                ),
            )
        )
    return parts


def _roll_about(q: np.ndarray, center: np.ndarray, roll: float) -> np.ndarray:
    """Rotate canvas point ``q`` (x, y, z) about ``center`` by ``roll`` degrees in the image plane."""
    t = math.radians(roll)
    dx, dy = q[0] - center[0], q[1] - center[1]
    return np.array(
        [
            center[0] + math.cos(t) * dx - math.sin(t) * dy,
            center[1] + math.sin(t) * dx + math.cos(t) * dy,
            q[2],
        ]
    )


def _annotate(
    ctx: Projector, pts: dict[str, np.ndarray], face_v: dict[str, np.ndarray], yaw_head: float, ss: int
) -> np.ndarray:
    """Project joints; keep those inside the frame, facing the camera and not hidden."""
    h, w = ctx.canvas.z.shape
    out_h, out_w = h // ss, w // ss
    kp = np.full((NUM_JOINTS, 2), float(MISSING), np.float32)
    turn = rot_y(yaw_head)
    for name, j in JOINT_INDEX.items():
        q = face_v[name] if name in face_v else ctx.to_view(pts[name])
        x, y = (q[0] + 0.5) / ss - 0.5, (q[1] + 0.5) / ss - 0.5
        if not (0 <= round(float(x)) <= out_w - 1 and 0 <= round(float(y)) <= out_h - 1):
            continue
        if name in face_v:
            normal = turn @ (_FACE_POINTS[name] / np.linalg.norm(_FACE_POINTS[name]))
            if normal[2] < _FACING_MIN[name]:
                continue
            surface = q[2] + 0.15 * HEAD_R * ctx.px_per_unit
        else:
            surface = q[2] + _JOINT_RADIUS.get(name[1:], 0.03) * ctx.px_per_unit * 1.2
        i, jx = round(q[1]), round(q[0])
        i, jx = min(max(i, 0), h - 1), min(max(jx, 0), w - 1)
        owner = int(ctx.canvas.owner[i, jx])
        incident = {_PID[p] for p in _INCIDENT[name]}
        if owner >= 0 and owner not in incident and ctx.canvas.z[i, jx] > surface:
            continue  # another part lies in front of this joint
        kp[j] = (x, y)
    return kp
