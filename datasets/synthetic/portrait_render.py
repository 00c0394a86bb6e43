"""Rendering of the synthetic portraits: shaded head, features, hair, accessories.

Everything is drawn at ``supersample``× the output size and box-filtered down, which
antialiases every edge the same way.  The head is ray-cast per pixel
(:func:`datasets.synthetic.portrait_geometry.raycast`) and lit with a Lambert term; the
facial features are polygons through dense Catmull-Rom curves *through the
landmarks themselves*, lifted onto the same surface and projected with the same
pose - so the exported landmarks sit on the drawn features by construction.

Layers, back to front: background, long hair behind the head, neck and clothes,
the far ear, the head (skin, hair shell, brows, eyes, lips, shading), the nose
(two shaded side faces, tip, nostrils), the near ear with its earring, glasses.

:func:`render_with_truth` draws the same pixels and also returns the ground truth (part map,
head-model points; :mod:`datasets.synthetic.portrait_groundtruth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.synthetic.groundtruth import GroundTruth
from datasets.synthetic.portrait_geometry import (
    NOSE_PROTRUSION,
    FaceShape,
    HeadPose,
    HeadProfile,
    head_profile,
    lift,
    project,
    raycast,
    yaw_rotate,
)
from datasets.synthetic.portrait_groundtruth import PartRecorder, canonical_head_points

Colour = tuple[float, float, float]
HAIR_STYLES: tuple[str, ...] = ("buzz", "short", "bangs", "bob", "long", "bun")
GLASSES: tuple[str, ...] = ("none", "round", "square")
_EAR_TOP, _EAR_BOTTOM = -0.12, 0.5


@dataclass(frozen=True)
class PortraitAppearance:
    """Identity colours, hair, accessories, background and light (RGB in [0, 1])."""

    skin: Colour
    hair: Colour
    hair_style: str
    hairline: float  # front hairline height (head frame y)
    eye: Colour
    lips: Colour
    clothes: Colour
    glasses: str = "none"
    glasses_colour: Colour = (0.1, 0.1, 0.1)
    earrings: str = "none"  # "none", "stud", "hoop"
    earring_colour: Colour = (0.85, 0.7, 0.3)
    background: str = "gradient"  # "plain", "gradient", "clutter"
    bg_colours: tuple[Colour, Colour] = ((0.6, 0.65, 0.7), (0.3, 0.35, 0.4))
    bg_seed: int = 0
    light: tuple[float, float, float] = (0.3, -0.4, 1.0)  # towards the light, image frame
    ambient: float = 0.4


def catmull_rom(points: np.ndarray, closed: bool, samples: int = 8) -> np.ndarray:
    """Dense points of the uniform Catmull-Rom spline through ``points`` (passes through each)."""
    p = np.asarray(points, np.float64)
    n = len(p)
    if n < 2:
        return p.copy()
    ext = (
        np.concatenate([p[-1:], p, p[:2]])
        if closed
        else np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    )
    segs = n if closed else n - 1
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    out = []
    for i in range(segs):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        out.append(
            0.5
            * (
                (2 * p1)
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    if not closed:
        out.append(p[-1:])
    return np.concatenate(out)


class PortraitCanvas:
    """Float RGB image at the supersampled size with antialiased polygon compositing."""

    SHIFT = 4  # sub-pixel bits for cv2 drawing

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.rgb = np.zeros((height, width, 3), np.float32)

    def mask(self, polys: list[np.ndarray], thickness: float = 0.0, closed: bool = True) -> np.ndarray:
        """Coverage in [0, 1] of filled polygons (thickness 0) or stroked polylines."""
        out = np.zeros((self.h, self.w), np.float32)
        pts = [
            np.round(np.asarray(p, np.float64) * (1 << self.SHIFT)).astype(np.int32)
            for p in polys
            if len(p) > 1
        ]
        if not pts:
            return out
        m = np.zeros((self.h, self.w), np.uint8)
        if thickness <= 0:
            cv2.fillPoly(m, pts, (255,), cv2.LINE_AA, self.SHIFT)
        else:
            cv2.polylines(m, pts, closed, (255,), max(round(thickness), 1), cv2.LINE_AA, self.SHIFT)
        # Convert only the drawn box: most polygons are small next to the frame.
        x, y, w, h = cv2.boundingRect(m)
        out[y : y + h, x : x + w] = m[y : y + h, x : x + w] * np.float32(1.0 / 255.0)
        return out

    def paint(self, alpha: np.ndarray, colour: Colour | np.ndarray, target: np.ndarray | None = None) -> None:
        """Composite ``colour`` over the image with coverage ``alpha`` (only inside its bounding box)."""
        img = self.rgb if target is None else target
        x, y, w, h = cv2.boundingRect(
            (alpha > 0).view(np.uint8) if alpha.dtype == bool else (alpha > 0).astype(np.uint8)
        )
        if w == 0 or h == 0:
            return
        a = alpha[y : y + h, x : x + w, None]
        crop = img[y : y + h, x : x + w]
        crop *= 1.0 - a
        crop += a * np.asarray(colour, np.float32)


def _shade(normal: np.ndarray, light: np.ndarray, ambient: float) -> np.ndarray:
    return ambient + (1.0 - ambient) * np.clip(normal @ light, 0.0, 1.0)


def _background(app: PortraitAppearance, h: int, w: int) -> np.ndarray:
    c0, c1 = (np.asarray(c, np.float32) for c in app.bg_colours)
    if app.background == "plain":
        return np.broadcast_to(c0, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.clip(0.7 * yy / h + 0.3 * xx / w, 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    if app.background == "clutter":
        rng = np.random.default_rng(app.bg_seed)
        canvas = PortraitCanvas(h, w)
        canvas.rgb = img
        for _ in range(9):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
            col = np.clip(rng.uniform(0.15, 0.9, 3), 0, 1)
            if rng.random() < 0.5:
                poly = np.array(
                    [[cx - rx, cy - ry], [cx + rx, cy - ry], [cx + rx, cy + ry], [cx - rx, cy + ry]]
                )
            else:
                a = np.linspace(0, 2 * np.pi, 40)
                poly = np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)
            canvas.paint(canvas.mask([poly]) * 0.8, col)
        img = cv2.GaussianBlur(canvas.rgb, (0, 0), 0.01 * w + 1.0)  # out of focus behind the sitter
    return img


class _Scene:
    """Shared state of one render: profile, pose at the supersampled scale, light, drawing."""

    def __init__(
        self,
        shape: FaceShape,
        app: PortraitAppearance,
        landmarks: np.ndarray,
        jaw_drop: float,
        pose: HeadPose,
        height: int,
        width: int,
        k: int,
        record: bool = False,
    ) -> None:
        self.shape, self.app, self.lm = shape, app, landmarks
        self.jaw_stretch = (shape.jaw_length + jaw_drop) / shape.jaw_length
        self.profile: HeadProfile = head_profile(shape, jaw_drop)
        off = (k - 1) / 2.0  # output pixel centre i sits at supersampled k·i + (k-1)/2
        self.pose = HeadPose(
            pose.cx * k + off, pose.cy * k + off, pose.scale * k, pose.roll_deg, pose.yaw_deg
        )
        self.k = k
        self.canvas = PortraitCanvas(height * k, width * k)
        light = np.asarray(app.light, np.float64)
        self.light = light / np.linalg.norm(light)
        self.rec = PartRecorder(height * k, width * k) if record else None

    def record(self, alpha: np.ndarray, part: str, on_head: bool = False) -> None:
        """Note that layer ``part`` was painted with coverage ``alpha`` (only when recording);
        ``on_head``: painted into the head's albedo, so it shows the head's points."""
        if self.rec is not None:
            self.rec.cover(self.rec.on_head(alpha) if on_head else alpha, part, keep_surface=on_head)

    def px(self, value: float) -> float:
        """Head units -> supersampled pixels."""
        return value * self.pose.scale

    def on_face(self, frontal: np.ndarray, protrusion: float | np.ndarray = 0.0) -> np.ndarray:
        return project(lift(frontal, self.profile, protrusion), self.pose)

    def free(self, xyz: np.ndarray) -> np.ndarray:
        return project(np.asarray(xyz, np.float64), self.pose)

    def plane_shade(self, xyz: np.ndarray) -> float:
        """Lambert shade of the plane through three head-frame points (normal towards the camera)."""
        p = yaw_rotate(np.asarray(xyz, np.float64), self.pose.yaw_deg)
        n = np.cross(p[1] - p[0], p[2] - p[0])
        n = n / (np.linalg.norm(n) + 1e-12)
        if n[2] < 0:
            n = -n
        a = math.radians(self.pose.roll_deg)
        n = np.array(
            [math.cos(a) * n[0] + math.sin(a) * n[1], -math.sin(a) * n[0] + math.cos(a) * n[1], n[2]]
        )
        return float(_shade(n, self.light, self.app.ambient))


def _hair_behind(sc: _Scene) -> None:
    """Hair hanging behind the head (bob, long) or a bun: flat shapes set back from the head."""
    style = sc.app.hair_style
    if style not in ("bob", "long", "bun"):
        return
    top = sc.profile.top
    if style == "bun":
        a = np.linspace(0, 2 * np.pi, 48)
        pts2 = np.stack([0.5 * np.cos(a), top + 0.25 + 0.42 * np.sin(a)], 1)
    else:
        bottom = 1.25 if style == "bob" else 2.9
        half = 1.3 if style == "bob" else 1.45
        ys = np.linspace(top + 0.3, bottom - 0.15, 16)
        xs = half * np.clip(np.sqrt(np.clip((ys - top) / 0.9, 0, 1)), 0.3, 1.0)
        t = np.linspace(0, np.pi, 12)
        arc = np.stack([half * np.cos(t), bottom - 0.15 + 0.15 * np.sin(t) ** 0.5], 1)  # rounded ends
        pts2 = np.concatenate([np.stack([xs, ys], 1), arc[1:-1], np.stack([-xs, ys], 1)[::-1]])
    pts = np.concatenate([pts2, np.full((len(pts2), 1), -0.5)], 1)
    m = sc.canvas.mask([sc.free(pts)])
    sc.canvas.paint(m, np.asarray(sc.app.hair) * 0.62)
    sc.record(m, "hair_back")


def _neck_and_clothes(sc: _Scene) -> None:
    chin = sc.profile.chin
    neck = np.array([[-0.5, 0.7, -0.3], [0.5, 0.7, -0.3], [0.55, 3.5, -0.3], [-0.55, 3.5, -0.3]])
    c = sc.canvas
    m = c.mask([sc.free(neck)])
    skin = np.asarray(sc.app.skin)
    c.paint(m, skin * (0.55 + 0.35 * sc.app.ambient))
    sc.record(m, "neck")
    # Shadow under the chin on the neck.
    shadow = np.array(
        [[-0.55, 0.9, -0.3], [0.55, 0.9, -0.3], [0.55, chin + 0.35, -0.3], [-0.55, chin + 0.35, -0.3]]
    )
    c.paint(cv2.GaussianBlur(c.mask([sc.free(shadow)]), (0, 0), sc.px(0.08)) * m * 0.45, skin * 0.3)
    ys = np.linspace(chin + 0.55, 4.0, 12)
    half = np.clip(0.55 + 1.6 * np.sqrt(np.clip(ys - chin - 0.55, 0, None)), 0, 2.6)
    body = np.concatenate([np.stack([-half, ys], 1), np.stack([half, ys], 1)[::-1]])
    body3 = np.concatenate([body, np.full((len(body), 1), -0.6)], 1)
    clothes = c.mask([sc.free(body3)])
    c.paint(clothes, np.asarray(sc.app.clothes))
    sc.record(clothes, "clothing")
    collar = np.array([[-0.5, chin + 0.55, -0.3], [0.0, chin + 0.95, -0.1], [0.5, chin + 0.55, -0.3]])
    neckline = c.mask([sc.free(collar)])
    c.paint(neckline, skin * (0.5 + 0.4 * sc.app.ambient))
    sc.record(neckline, "neck")


def _ear(sc: _Scene, side: int) -> None:
    ys = np.linspace(_EAR_TOP, _EAR_BOTTOM, 14)
    w, _, zc, *_ = sc.profile.at(ys)
    t = (ys - _EAR_TOP) / (_EAR_BOTTOM - _EAR_TOP)
    bulge = 0.2 * np.sin(np.pi * np.clip(t, 0, 1)) ** 0.6 * (1.0 - 0.35 * t)
    base = np.stack([side * (w - 0.02), ys, zc - 0.15], 1)
    rim = np.stack([side * (w + bulge), ys, zc - 0.3 - 0.6 * bulge], 1)
    skin = np.asarray(sc.app.skin)
    shade = sc.plane_shade(np.array([base[0], base[-1], rim[7]]))
    c = sc.canvas
    ear = c.mask([sc.free(np.concatenate([base, rim[::-1]]))])
    c.paint(ear, skin * shade * 0.92)
    sc.record(ear, "ears")
    inner = base + 0.55 * (rim - base)
    inner[:, 1] = ys * 0.8 + 0.2 * ys.mean()
    c.paint(c.mask([sc.free(np.concatenate([base[2:-3], inner[2:-3][::-1]]))]) * 0.7, skin * shade * 0.6)
    if sc.app.earrings != "none":
        lobe = np.array([side * (w[-1] + 0.05), _EAR_BOTTOM + 0.06, zc[-1] - 0.25])
        centre = sc.free(lobe[None])[0]
        a = np.linspace(0, 2 * np.pi, 32)
        if sc.app.earrings == "stud":
            r = sc.px(0.05)
            m = c.mask([centre + r * np.stack([np.cos(a), np.sin(a)], 1)])
        else:
            r = sc.px(0.11)
            ring = centre + np.stack([r * 0.8 * np.cos(a), r + r * np.sin(a)], 1)
            m = c.mask([ring], thickness=max(sc.px(0.03), 1.0))
        c.paint(m, np.asarray(sc.app.earring_colour))
        sc.record(m, "earrings")


def _hairline(sc: _Scene, phi: np.ndarray) -> np.ndarray:
    """Head-frame y below which (i.e. above, y up) the head shell shows hair, per surface angle."""
    app = sc.app
    front = app.hairline
    aphi = np.abs(phi)
    if app.hair_style == "bangs":
        front = -0.5 + 0.04 * np.cos(9 * phi)
    side, back = (-0.25, 0.6) if app.hair_style in ("buzz", "short") else (-0.2, 1.0)
    y = front + (side - front) * np.clip((aphi - 0.75) / 0.55, 0, 1) ** 2
    return np.where(aphi > 1.75, side + (back - side) * np.clip((aphi - 1.75) / 0.4, 0, 1), y)


def _head(sc: _Scene) -> None:
    """Ray-cast skin and hair shell with the features painted on, shaded, over the canvas."""
    c, app = sc.canvas, sc.app
    hits = raycast(sc.profile, sc.pose, c.h, c.w)
    y0, y1, x0, x1 = hits.box
    m = hits.mask
    phi, y = hits.phi[m], hits.y[m]
    skin = np.asarray(app.skin, np.float32)
    albedo = np.broadcast_to(skin, (c.h, c.w, 3)).copy()
    xf = np.sin(phi) * sc.profile.at(y)[0]
    col = np.broadcast_to(skin, (len(phi), 3)).copy()
    # Warmer cheeks, a touch darker behind the jaw line (under the jaw, turning to the neck).
    blush = np.exp(-((np.abs(xf) - 0.52) ** 2 + (y - 0.6) ** 2) / 0.05)[:, None]
    col *= 1.0 - 0.12 * blush * (1.0 - np.array([0.0, 0.6, 0.6], np.float32))
    under = np.clip((np.abs(phi) - np.pi / 2) / 0.08, 0, 1) * np.clip((y - 0.4) / 0.3, 0, 1)
    col *= (1.0 - 0.22 * under)[:, None]
    hair_a = np.clip((_hairline(sc, phi) - y) / 0.04, 0, 1)
    if app.hair_style == "buzz":
        hair_a *= 0.6
    strands = 0.9 + 0.1 * np.sin(31 * phi + 4 * np.sin(3 * y) + 2 * np.sin(7 * phi))
    hair = np.asarray(app.hair, np.float32) * strands[:, None]
    col = col * (1 - hair_a[:, None]) + hair * hair_a[:, None]
    if sc.rec is not None:
        w, d, zc, *_ = sc.profile.at(y)
        points = canonical_head_points(phi, y, w, d, zc, sc.shape.jaw_top, sc.jaw_stretch)
        sc.rec.cover_head(hits.box, m, points, hair_a)
    crop = albedo[y0:y1, x0:x1]
    crop[m] = col
    _features(sc, albedo)
    n = hits.normal[m]
    shade = _shade(n, sc.light, app.ambient)
    half = sc.light + np.array([0, 0, 1.0])
    spec = np.clip(n @ (half / np.linalg.norm(half)), 0, 1) ** 24
    out = c.rgb[y0:y1, x0:x1]
    out[m] = crop[m] * shade[:, None] + (0.08 * spec * (1 - hair_a))[:, None]


def _features(sc: _Scene, albedo: np.ndarray) -> None:
    """Brows, eyes and lips painted into the skin albedo (so they are shaded with the head)."""
    lm, c = sc.lm, sc.canvas
    hair = np.asarray(sc.app.hair)
    brow_colour = np.clip(hair * 0.75 + 0.05, 0, 1)
    for idx, inner_first in (((17, 18, 19, 20, 21), False), ((22, 23, 24, 25, 26), True)):
        centre = catmull_rom(lm[list(idx)], closed=False, samples=6)
        n = len(centre)
        s = np.linspace(0, 1, n) if inner_first else np.linspace(1, 0, n)  # 0 at the inner end
        thick = 0.055 - 0.025 * s
        tang = np.gradient(centre, axis=0)
        norm = np.stack([-tang[:, 1], tang[:, 0]], 1) / (np.linalg.norm(tang, axis=1, keepdims=True) + 1e-9)
        band = np.concatenate(
            [centre + norm * thick[:, None] / 2, (centre - norm * thick[:, None] / 2)[::-1]]
        )
        brow = c.mask([sc.on_face(band)]) * 0.95
        c.paint(brow, brow_colour, albedo)
        sc.record(brow, "brows", on_head=True)
    for eye in (np.arange(36, 42), np.arange(42, 48)):
        outline = catmull_rom(lm[eye], closed=True, samples=8)
        poly = sc.on_face(outline)
        sclera = c.mask([poly])
        c.paint(sclera, (0.93, 0.91, 0.88), albedo)
        sc.record(sclera, "eyes", on_head=True)
        corners = lm[[eye[0], eye[3]]]
        centre = corners.mean(0) + [0, -0.005]
        r = 0.075 + 0.0 * corners[0, 0]
        a = np.linspace(0, 2 * np.pi, 40)
        iris = sc.on_face(centre + r * np.stack([np.cos(a), np.sin(a)], 1))
        pupil = sc.on_face(centre + 0.5 * r * np.stack([np.cos(a), np.sin(a)], 1))
        c.paint(c.mask([iris]) * sclera, sc.app.eye, albedo)
        c.paint(c.mask([pupil]) * sclera, (0.03, 0.03, 0.03), albedo)
        glint = sc.on_face(centre + [-0.3 * r, -0.35 * r] + 0.22 * r * np.stack([np.cos(a), np.sin(a)], 1))
        c.paint(c.mask([glint]) * sclera * 0.8, (1.0, 1.0, 1.0), albedo)
        upper = catmull_rom(lm[[eye[0], eye[1], eye[2], eye[3]]], closed=False, samples=8)
        lash = c.mask([sc.on_face(upper)], thickness=sc.px(0.032), closed=False)
        c.paint(lash, (0.08, 0.06, 0.05), albedo)
        sc.record(lash, "eyes", on_head=True)
        crease = upper + [0, -0.055]
        c.paint(
            c.mask([sc.on_face(crease)], thickness=sc.px(0.012), closed=False) * 0.35,
            np.asarray(sc.app.skin) * 0.55,
            albedo,
        )
        lower = catmull_rom(lm[[eye[3], eye[4], eye[5], eye[0]]], closed=False, samples=8)
        c.paint(
            c.mask([sc.on_face(lower)], thickness=sc.px(0.014), closed=False) * 0.5,
            np.asarray(sc.app.skin) * 0.5,
            albedo,
        )
    # Lips: the mouth opening, teeth, then both lips (their inner edges are the inner landmarks).
    inner = sc.on_face(catmull_rom(lm[60:68], closed=True, samples=8))
    opening = c.mask([inner])
    c.paint(opening, (0.22, 0.06, 0.07), albedo)
    sc.record(opening, "mouth", on_head=True)
    upper_inner = catmull_rom(lm[60:65], closed=False, samples=8)
    teeth = np.concatenate([upper_inner, (upper_inner + [0, 0.075])[::-1]])
    c.paint(c.mask([sc.on_face(teeth)]) * opening, (0.92, 0.9, 0.84), albedo)
    lips = np.asarray(sc.app.lips)
    up = np.concatenate([catmull_rom(lm[48:55], False, 8), catmull_rom(lm[[64, 63, 62, 61, 60]], False, 8)])
    lo = np.concatenate(
        [
            catmull_rom(lm[[54, 55, 56, 57, 58, 59, 48]], False, 8),
            catmull_rom(lm[[60, 67, 66, 65, 64]], False, 8),
        ]
    )
    for poly, shade in ((up, 0.88), (lo, 1.0)):
        lip = c.mask([sc.on_face(poly)])
        c.paint(lip, lips * shade, albedo)
        sc.record(lip, "lips", on_head=True)
    line = sc.on_face(catmull_rom(lm[[48, 60, 61, 62, 63, 64, 54]], False, 8))
    c.paint(c.mask([line], thickness=sc.px(0.012), closed=False) * 0.6, lips * 0.45, albedo)


def _nose(sc: _Scene) -> None:
    """Two side faces lit by their own normals (soft edged), a shadow under the tip, nostrils, alae."""
    lm, c, s = sc.lm, sc.canvas, sc.shape
    pts = lift(lm[27:36], sc.profile, NOSE_PROTRUSION * s.nose_protrusion)  # the landmarks' depths
    skin = np.asarray(sc.app.skin)
    yb = lm[33, 1]
    blur = sc.px(0.035)
    faces = []
    for side in (-1, 1):
        ala, mid = (pts[4], pts[5]) if side < 0 else (pts[8], pts[7])
        cheek = lift(
            np.array(
                [
                    [side * 0.05, 0.02],
                    [side * 0.09, 0.4 * s.nose_length],
                    [side * 0.9 * s.nose_width, yb - 0.13],
                ]
            ),
            sc.profile,
        )
        poly3 = np.stack([pts[0], pts[1], pts[2], pts[3], mid, ala, cheek[2], cheek[1], cheek[0]])
        shade = sc.plane_shade(np.stack([pts[0], pts[3], ala]))
        depth = yaw_rotate(poly3, sc.pose.yaw_deg)[:, 2].mean()
        faces.append((depth, poly3, shade))
    for _, poly3, shade in sorted(faces, key=lambda f: f[0]):
        side_face = cv2.GaussianBlur(c.mask([sc.free(poly3)]), (0, 0), blur) * 0.7
        c.paint(side_face, skin * shade)
        sc.record(side_face, "nose")
    a = np.linspace(0, 2 * np.pi, 32)
    ring = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], 1)
    under = lift(np.array([[0.0, yb + 0.05]]), sc.profile, 0.02)[0]
    c.paint(
        cv2.GaussianBlur(c.mask([sc.free(under + ring * [s.nose_width * 0.9, 0.045, 0])]), (0, 0), blur)
        * 0.3,
        skin * 0.45,
    )
    c.paint(
        cv2.GaussianBlur(c.mask([sc.free(pts[3] + [0, -0.03, 0] + ring * [0.045, 0.03, 0])]), (0, 0), blur)
        * 0.3,
        (1.0, 0.97, 0.95),
    )
    for side in (-1, 1):
        centre = lift(np.array([[side * s.nose_width * 0.5, yb - 0.03]]), sc.profile, 0.12)[0]
        nostril = c.mask([sc.free(centre + ring * [0.05, 0.02, 0])]) * 0.75
        c.paint(nostril, skin * 0.22)
        sc.record(nostril, "nose")
        ala = lm[31] if side < 0 else lm[35]
        crease = np.array(
            [ala, [side * s.nose_width * 0.95, yb - 0.12], [side * s.nose_width * 0.55, yb - 0.15]]
        )
        curve = sc.on_face(catmull_rom(crease, False, 6), 0.08)
        c.paint(c.mask([curve], thickness=sc.px(0.015), closed=False) * 0.35, skin * 0.4)


def _glasses(sc: _Scene) -> None:
    app, s, c = sc.app, sc.shape, sc.canvas
    if app.glasses == "none":
        return
    a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    rx, ry = s.eye_width + 0.1, 0.2
    power = 2.0 if app.glasses == "round" else 5.0
    ring = np.stack(
        [
            np.sign(np.cos(a)) * np.abs(np.cos(a)) ** (2 / power),
            np.sign(np.sin(a)) * np.abs(np.sin(a)) ** (2 / power),
        ],
        1,
    ) * [rx, ry]
    col = np.asarray(app.glasses_colour)
    thick = max(sc.px(0.035), 1.0)
    rims = []
    for side in (-1, 1):
        centre = np.array([side * s.eye_x, 0.0])
        rims.append(sc.on_face(centre + ring, 0.14))
    for rim in rims:
        c.paint(c.mask([rim]) * 0.12, col)
        frame = c.mask([rim], thickness=thick)
        c.paint(frame, col)
        sc.record(frame, "glasses")
    bridge = np.array([[-(s.eye_x - rx), -0.04], [0.0, -0.08], [s.eye_x - rx, -0.04]])
    nose_pad = c.mask([sc.on_face(bridge, np.array([0.14, 0.2, 0.14]))], thickness=thick, closed=False)
    c.paint(nose_pad, col)
    sc.record(nose_pad, "glasses")
    yaw = sc.pose.yaw_deg
    if abs(yaw) > 4:  # the near temple arm runs back along the head to the ear
        side = -1 if yaw > 0 else 1
        x0 = side * (s.eye_x + rx)
        front = lift(np.array([[x0, -0.02]]), sc.profile, 0.14)[0]
        w, _, zc, *_ = sc.profile.at(np.array([0.0]))
        back = np.array([side * (w[0] + 0.04), 0.02, zc[0] - 0.2])
        arm = c.mask([sc.free(np.stack([front, back]))], thickness=thick, closed=False)
        c.paint(arm, col)
        sc.record(arm, "glasses")


def _draw(sc: _Scene, app: PortraitAppearance, pose: HeadPose, h: int, w: int, k: int) -> np.ndarray:
    """Every layer, back to front, on ``sc``'s canvas; the uint8 [h, w, 3] image."""
    sc.canvas.rgb = _background(app, h * k, w * k).astype(np.float32)
    _hair_behind(sc)
    _neck_and_clothes(sc)
    near = 0 if abs(pose.yaw_deg) < 3 else (-1 if pose.yaw_deg > 0 else 1)
    for side in (-1, 1):
        if side != near:
            _ear(sc, side)
    _head(sc)
    _nose(sc)
    if near:
        _ear(sc, near)
    _glasses(sc)
    small = cv2.resize(sc.canvas.rgb, (w, h), interpolation=cv2.INTER_AREA)
    return (np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(
    shape: FaceShape,
    app: PortraitAppearance,
    landmarks_frontal: np.ndarray,
    jaw_drop: float,
    pose: HeadPose,
    size: tuple[int, int],
    supersample: int = 4,
) -> np.ndarray:
    """uint8 [H, W, 3] RGB portrait of a face whose frontal landmarks (with expression) are given."""
    h, w = size
    sc = _Scene(shape, app, np.asarray(landmarks_frontal, np.float64), jaw_drop, pose, h, w, supersample)
    return _draw(sc, app, pose, h, w, supersample)


def render_with_truth(
    shape: FaceShape,
    app: PortraitAppearance,
    landmarks_frontal: np.ndarray,
    jaw_drop: float,
    pose: HeadPose,
    size: tuple[int, int],
    supersample: int = 4,
) -> tuple[np.ndarray, GroundTruth]:
    """:func:`render`'s image (the same pixels) and its ground truth at output resolution."""
    h, w = size
    k = supersample
    sc = _Scene(shape, app, np.asarray(landmarks_frontal, np.float64), jaw_drop, pose, h, w, k, record=True)
    image = _draw(sc, app, pose, h, w, k)
    assert sc.rec is not None
    return image, sc.rec.ground_truth(k, pose.scale)
