"""The parametric head of the synthetic portraits: shape, 68 landmarks, pose, ray casting.

One model gives both the picture and the landmarks, so the landmarks are exact:
every landmark is a point of the same surface the renderer ray-casts (or, for
the nose, a fixed protrusion in front of it), projected by the same pose.

Head frame (units of the face half-width at cheek level; x to the image right,
y down, z towards the camera; origin between the eyes at eye level)::

    head = a stack of horizontal ellipses: at height y the cross-section is
           (x / w(y))² + ((z - zc(y)) / d(y))² = 1
    cranium (y < y0):   w = (1 - ((y0 - y) / Hc)^2.4)^(1/2.4) (+ hair volume), d = 1.3 w, zc = -0.2
    lower face (y ≥ y0): with u = (y - y0) / L ∈ [0, 1]
                         w = (1 - u^p)^(1/p) · (1 - taper·u)        (p: round 2 … square 3)
                         front = 1.1 - 0.25 u², back = -1.5 + 2.6 u^1.6 (meets the front at the chin)

``y0`` is the jaw top (landmarks 0 and 16), ``L`` the jaw length.  Opening the
mouth lowers the chin: ``L = L0 + drop``, a vertical stretch of the lower face,
which is exactly what :func:`datasets.faces.edits.mouth_open` does to the jaw
points (they sit at fixed fractions ``u`` of the jaw).

Landmarks are designed in *frontal* coordinates (x, y) on this surface; a point
lifts to 3D as ``φ = asin(x / w(y))``, ``z = zc + d·cos φ`` (+ a protrusion for
the nose).  Jaw points are the cross-sections' widest points (φ = ±90°), i.e. the
face outline of a frontal view.

HeadPose: yaw ψ (a rotation about the vertical axis: ``x' = x cos ψ + z sin ψ``, so
foreshortening, parallax of the nose and self-occlusion all follow), then roll,
scale and translation in the image plane, orthographic.  A landmark is hidden
(-1) when its surface normal faces away from the camera by more than
:data:`GRAZE_DEG` (contour points at grazing angles still count as seen), or
when it falls outside the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datasets.pose.landmarks import MISSING, NUM_LANDMARKS

GRAZE_DEG = 20.0  # a landmark whose normal turns away by more than this is hidden
CRANIUM_DEPTH = 1.3  # cranium half-depth / half-width
CRANIUM_ZC = -0.2
_PROFILE_SAMPLES = 1024


@dataclass(frozen=True)
class FaceShape:
    """Identity geometry, in face half-widths (see the module docstring)."""

    jaw_top: float = 0.15  # y0: height of jaw points 0/16 below eye level
    jaw_length: float = 1.55  # L0: jaw top to chin, mouth closed
    jaw_power: float = 2.3  # p: 1.8 narrow/oval … 3.2 square
    jaw_taper: float = 0.1  # narrowing of the lower face towards the chin
    cranium_height: float = 1.8  # jaw top to top of skull (without hair)
    hair_volume: float = 0.1  # extra size of the hair shell above the temples
    eye_x: float = 0.44  # eye centres at (±eye_x, 0)
    eye_width: float = 0.22  # half-width of an eye
    eye_height: float = 0.11  # upper lid height above the corner line
    eye_tilt: float = 0.02  # outer corners raised by this much
    brow_height: float = 0.3  # inner brow end above eye level
    brow_arch: float = 0.06
    brow_inner: float = 0.16  # inner brow ends at x = ±brow_inner
    nose_length: float = 0.66  # eye level to nose tip
    nose_width: float = 0.2  # half-width of the nostril base
    nose_protrusion: float = 1.0  # multiplier of the nose's depth profile
    mouth_y: float = 1.02  # mouth line below eye level
    mouth_width: float = 0.36  # half-width
    upper_lip: float = 0.07  # thickness
    lower_lip: float = 0.09
    cupid_bow: float = 0.018


@dataclass(frozen=True)
class HeadPose:
    """Where the head frame's origin lands and how the head is turned."""

    cx: float  # image position of the origin (pixels)
    cy: float
    scale: float  # pixels per face half-width
    roll_deg: float = 0.0  # in-plane rotation, counter-clockwise on screen
    yaw_deg: float = 0.0  # positive turns the face towards the image right


# Protrusion in front of the surface for the nose points 27-35 (scaled by nose_protrusion).
NOSE_PROTRUSION = np.array([0.03, 0.12, 0.22, 0.30, 0.07, 0.14, 0.18, 0.14, 0.07])


def _eye(shape: FaceShape, side: int) -> np.ndarray:
    """Six points of one eye in iBUG order; side=-1 right eye (image left), +1 left eye."""

    def lid(t: float, upper: bool) -> tuple[float, float]:
        # t from -1 (outer corner) to +1 (inner corner)
        x = side * (shape.eye_x - t * shape.eye_width)
        base = -shape.eye_tilt * (1.0 - t) / 2.0
        if upper:
            return x, base - shape.eye_height * (1.0 - t * t) ** 0.7 * (1.0 + 0.12 * t)
        return x, base + 0.5 * shape.eye_height * (1.0 - t * t) ** 0.8

    third = 1.0 / 3.0
    if side < 0:  # 36 outer, 37, 38 upper, 39 inner, 40, 41 lower
        pts = [
            lid(-1, True),
            lid(-third, True),
            lid(third, True),
            lid(1, True),
            lid(third, False),
            lid(-third, False),
        ]
    else:  # 42 inner, 43, 44 upper, 45 outer, 46, 47 lower
        pts = [
            lid(1, True),
            lid(third, True),
            lid(-third, True),
            lid(-1, True),
            lid(-third, False),
            lid(third, False),
        ]
    return np.asarray(pts)


def _brow(shape: FaceShape, side: int) -> np.ndarray:
    """Five brow points on the brow's centre line, iBUG order (17→21 outer→inner, 22→26 inner→outer)."""
    s = np.array([1.0, 0.75, 0.5, 0.25, 0.0]) if side < 0 else np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    outer = shape.eye_x + shape.eye_width + 0.05
    x = side * (shape.brow_inner + s * (outer - shape.brow_inner))
    y = -shape.brow_height - shape.brow_arch * np.sin(np.pi * s**0.8) + 0.06 * s**2
    return np.stack([x, y], 1)


def jaw_fractions(shape: FaceShape) -> np.ndarray:
    """u of jaw points 0..16, spaced evenly by arc length along the closed-mouth outline."""
    u = np.linspace(0.0, 1.0, 2001)
    x = jaw_width(shape, u)
    y = shape.jaw_top + u * shape.jaw_length
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    side = np.interp(np.linspace(0.0, arc[-1], 9), arc, u)  # points 0..8
    side[-1] = 1.0
    return np.concatenate([side, side[-2::-1]])


def jaw_width(shape: FaceShape, u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return (1.0 - u**shape.jaw_power) ** (1.0 / shape.jaw_power) * (1.0 - shape.jaw_taper * u)


def neutral_landmarks(shape: FaceShape) -> np.ndarray:
    """[68, 2] frontal (x, y) of the closed-mouth, relaxed face in the head frame."""
    lm = np.zeros((NUM_LANDMARKS, 2))
    u = jaw_fractions(shape)
    sign = np.where(np.arange(17) < 8, -1.0, 1.0)
    lm[0:17, 0] = sign * jaw_width(shape, u)
    lm[0:17, 1] = shape.jaw_top + u * shape.jaw_length
    lm[8, 0] = 0.0
    lm[17:22], lm[22:27] = _brow(shape, -1), _brow(shape, +1)
    nl = shape.nose_length
    lm[27:31] = [[0, -0.02], [0, nl * 0.36], [0, nl * 0.7], [0, nl]]
    yb, nw = nl + 0.08, shape.nose_width
    lm[31:36] = [[-nw, yb - 0.03], [-nw / 2, yb + 0.01], [0, yb + 0.02], [nw / 2, yb + 0.01], [nw, yb - 0.03]]
    lm[36:42], lm[42:48] = _eye(shape, -1), _eye(shape, +1)
    ym, mw, tu, tl = shape.mouth_y, shape.mouth_width, shape.upper_lip, shape.lower_lip
    lm[48:60] = [
        [-mw, ym],
        [-0.62 * mw, ym - 0.78 * tu],
        [-0.27 * mw, ym - tu],
        [0, ym - tu + shape.cupid_bow],
        [0.27 * mw, ym - tu],
        [0.62 * mw, ym - 0.78 * tu],
        [mw, ym],
        [0.6 * mw, ym + 0.8 * tl],
        [0.28 * mw, ym + 0.98 * tl],
        [0, ym + tl],
        [-0.28 * mw, ym + 0.98 * tl],
        [-0.6 * mw, ym + 0.8 * tl],
    ]
    # Closed mouth: the inner upper and lower lip lines coincide (a gap of zero).
    inner_x = np.array([-0.86, -0.4, 0.0, 0.4, 0.86, 0.4, 0.0, -0.4]) * mw
    lm[60:68, 0] = inner_x
    lm[60:68, 1] = ym + 0.012 * (1.0 - (inner_x / mw) ** 2)
    return lm


@dataclass(frozen=True)
class HeadProfile:
    """Cross-section tables over y (ascending), with their y derivatives."""

    y: np.ndarray
    w: np.ndarray
    d: np.ndarray
    zc: np.ndarray
    dw: np.ndarray
    dd: np.ndarray
    dzc: np.ndarray

    def at(self, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """(w, d, zc, dw, dd, dzc) linearly interpolated at heights ``y`` (clamped to the table)."""
        # The grid is uniform: one fractional index serves all six tables.
        y = np.asarray(y, np.float64)
        pos = np.clip((y - self.y[0]) / (self.y[1] - self.y[0]), 0.0, len(self.y) - 1.000001)
        i = pos.astype(np.int64)
        t = pos - i
        return tuple(
            tab[i] + t * (tab[i + 1] - tab[i])
            for tab in (self.w, self.d, self.zc, self.dw, self.dd, self.dzc)
        )

    @property
    def top(self) -> float:
        return float(self.y[0])

    @property
    def chin(self) -> float:
        return float(self.y[-1])


def head_profile(shape: FaceShape, jaw_drop: float = 0.0) -> HeadProfile:
    """Cross-sections of the head (with its hair shell) for a jaw opened by ``jaw_drop``."""
    y0, length = shape.jaw_top, shape.jaw_length + jaw_drop
    hc = shape.cranium_height + shape.hair_volume
    y = np.linspace(y0 - hc, y0 + length, _PROFILE_SAMPLES)
    w, d, zc = np.empty_like(y), np.empty_like(y), np.empty_like(y)
    top = y < y0
    # Hair volume grows in above the temples (y < -0.3), so the face outline stays the skin's.
    ramp = np.clip((-0.3 - y[top]) / 0.7, 0.0, 1.0)
    grow = shape.hair_volume * ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no crease in the shading
    # A squarish superellipse (power 2.4) gives the skull a fuller crown than an ellipse.
    ell = np.clip(1.0 - ((y0 - y[top]) / hc) ** 2.4, 0.0, None) ** (1.0 / 2.4)
    w[top] = (1.0 + grow) * ell
    d[top] = (CRANIUM_DEPTH + grow) * ell
    zc[top] = CRANIUM_ZC - 0.5 * grow * ell
    u = (y[~top] - y0) / length
    w[~top] = jaw_width(shape, u)
    front = (CRANIUM_ZC + CRANIUM_DEPTH) - 0.25 * u**2
    back = (CRANIUM_ZC - CRANIUM_DEPTH) + (2.6 - 0.25) * u**1.6
    d[~top], zc[~top] = (front - back) / 2.0, (front + back) / 2.0
    w, d = np.maximum(w, 1e-3), np.maximum(d, 1e-3)
    return HeadProfile(y, w, d, zc, np.gradient(w, y), np.gradient(d, y), np.gradient(zc, y))


def lift(points: np.ndarray, profile: HeadProfile, protrusion: np.ndarray | float = 0.0) -> np.ndarray:
    """Frontal (x, y) on the surface -> [N, 3] head-frame (x, y, z)."""
    pts = np.asarray(points, np.float64)
    w, d, zc, *_ = profile.at(pts[:, 1])
    phi = np.arcsin(np.clip(pts[:, 0] / w, -1.0, 1.0))
    z = zc + d * np.cos(phi) + protrusion
    return np.stack([pts[:, 0], pts[:, 1], z], 1)


def surface_normals(phi: np.ndarray, y: np.ndarray, profile: HeadProfile) -> np.ndarray:
    """Unit outward normals [N, 3] (head frame) at surface angle ``phi`` and height ``y``."""
    w, d, _, dw, dd, dzc = profile.at(y)
    s, c = np.sin(phi), np.cos(phi)
    n = np.stack([s / w, -(s * s * dw / w + c * dzc / d + c * c * dd / d), c / d], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def yaw_rotate(v: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Rotate head-frame vectors/points [N, 3] by the yaw (about the vertical axis)."""
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    out = np.array(v, np.float64, copy=True)
    out[..., 0] = v[..., 0] * c + v[..., 2] * s
    out[..., 2] = -v[..., 0] * s + v[..., 2] * c
    return out


def project(xyz: np.ndarray, pose: HeadPose) -> np.ndarray:
    """Head-frame points [N, 3] -> image (x, y) [N, 2]."""
    p = yaw_rotate(np.asarray(xyz, np.float64), pose.yaw_deg)
    a = math.radians(pose.roll_deg)
    c, s = math.cos(a), math.sin(a)
    # Counter-clockwise on screen with y pointing down.
    x = c * p[:, 0] + s * p[:, 1]
    y = -s * p[:, 0] + c * p[:, 1]
    return np.stack([pose.cx + pose.scale * x, pose.cy + pose.scale * y], 1)


def unproject_plane(px: np.ndarray, py: np.ndarray, pose: HeadPose) -> tuple[np.ndarray, np.ndarray]:
    """Image pixels -> (x', y) in the yawed head frame (the inverse of roll, scale, shift)."""
    a = math.radians(pose.roll_deg)
    c, s = math.cos(a), math.sin(a)
    dx, dy = (px - pose.cx) / pose.scale, (py - pose.cy) / pose.scale
    return c * dx - s * dy, s * dx + c * dy


def landmark_geometry(
    frontal: np.ndarray, shape: FaceShape, jaw_drop: float
) -> tuple[np.ndarray, np.ndarray]:
    """3D points [68, 3] and outward normals [68, 3] of frontal landmarks on the head."""
    profile = head_profile(shape, jaw_drop)
    prot = np.zeros(NUM_LANDMARKS)
    prot[27:36] = NOSE_PROTRUSION * shape.nose_protrusion
    xyz = lift(frontal, profile, prot)
    w = profile.at(frontal[:, 1])[0]
    phi = np.arcsin(np.clip(frontal[:, 0] / w, -1.0, 1.0))
    phi[0:8], phi[9:17] = -np.pi / 2, np.pi / 2  # jaw points: the cross-sections' widest points
    normals = surface_normals(phi, frontal[:, 1], profile)
    normals[27:36] = (0.0, 0.0, 1.0)  # the nose faces the camera over the yaw range used
    return xyz, normals


def image_landmarks(
    frontal: np.ndarray, shape: FaceShape, jaw_drop: float, pose: HeadPose, size: tuple[int, int]
) -> np.ndarray:
    """float32 [68, 2] image (x, y) of posed landmarks; hidden or out-of-frame points are -1."""
    xyz, normals = landmark_geometry(frontal, shape, jaw_drop)
    xy = project(xyz, pose)
    facing = yaw_rotate(normals, pose.yaw_deg)[:, 2] > -math.sin(math.radians(GRAZE_DEG))
    h, w = size
    inside = (xy[:, 0] > -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] > -0.5) & (xy[:, 1] < h - 0.5)
    out = xy.astype(np.float32)
    out[~(facing & inside)] = MISSING
    return out


@dataclass(frozen=True)
class RayHits:
    """Result of ray casting the head over the crop ``box`` of the frame that can hold it."""

    box: tuple[int, int, int, int]  # (y0, y1, x0, x1) of the crop in the frame
    mask: np.ndarray  # bool [h, w] pixels of the crop that see the head
    phi: np.ndarray  # surface angle (0 = front, ±π/2 = sides); 0 off the head
    y: np.ndarray  # head-frame height
    normal: np.ndarray  # [h, w, 3] unit normal in the image frame (x right, y down, z to camera)


def head_box(profile: HeadProfile, pose: HeadPose, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) pixel crop that contains the projected head (its 3D bounding box's image)."""
    wmax = float(profile.w.max())
    zlo, zhi = float((profile.zc - profile.d).min()), float((profile.zc + profile.d).max())
    corners = np.array(
        [[x, y, z] for x in (-wmax, wmax) for y in (profile.top, profile.chin) for z in (zlo, zhi)]
    )
    xy = project(corners, pose)
    x0, y0 = np.floor(xy.min(0)).astype(int) - 1
    x1, y1 = np.ceil(xy.max(0)).astype(int) + 2
    return max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)


def raycast(profile: HeadProfile, pose: HeadPose, height: int, width: int) -> RayHits:
    """Intersect each pixel's viewing ray with the yawed head (closed form per cross-section).

    At height y the yawed ellipse meets the ray x' = X where
    ``w cosψ sin φ + d sinψ cos φ = X - zc sinψ``; of the two roots the one nearer
    the camera (larger z') is the visible surface.  Only the head's crop is traced and
    the trigonometry runs on the pixels that hit.
    """
    y0, y1, x0, x1 = head_box(profile, pose, height, width)
    hh, ww = max(y1 - y0, 0), max(x1 - x0, 0)
    py, px = np.mgrid[y0 : y0 + hh, x0 : x0 + ww].astype(np.float64)
    xr, y = unproject_plane(px, py, pose)
    a = math.radians(pose.yaw_deg)
    ca, sa = math.cos(a), math.sin(a)
    inside = (y >= profile.top) & (y <= profile.chin)
    w, d, zc, *_ = profile.at(y[inside])
    A, B = w * ca, d * sa
    R = np.hypot(A, B)
    ratio = (xr[inside] - zc * sa) / R
    hit = np.abs(ratio) <= 1.0
    mask = np.zeros((hh, ww), bool)
    mask[inside] = hit
    w, d, zc, A, B, R, ratio = (v[hit] for v in (w, d, zc, A, B, R, ratio))
    yh = y[mask]
    beta = np.arctan2(B, A)
    base = np.arcsin(ratio)
    phi1, phi2 = base - beta, np.pi - base - beta
    z1 = -w * np.sin(phi1) * sa + (zc + d * np.cos(phi1)) * ca
    z2 = -w * np.sin(phi2) * sa + (zc + d * np.cos(phi2)) * ca
    phi = np.where(z1 >= z2, phi1, phi2)
    phi = (phi + np.pi) % (2 * np.pi) - np.pi
    n = yaw_rotate(surface_normals(phi, yh, profile), pose.yaw_deg)
    r = math.radians(pose.roll_deg)
    cr, sr = math.cos(r), math.sin(r)
    normal = np.zeros((hh, ww, 3))
    normal[mask] = np.stack([cr * n[:, 0] + sr * n[:, 1], -sr * n[:, 0] + cr * n[:, 1], n[:, 2]], -1)
    phi_full, y_full = np.zeros((hh, ww)), np.zeros((hh, ww))
    phi_full[mask], y_full[mask] = phi, yh
    return RayHits((y0, y0 + hh, x0, x0 + ww), mask, phi_full, y_full, normal)
