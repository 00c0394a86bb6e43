"""Raster primitives of the figure renderer: antialiased, shaded shapes from distance fields.

Shapes are evaluated per pixel of their bounding box on a supersampled canvas:
tapered capsules (limbs), tapered rounded ribbons (torso, skirt, hanging hair) and
small ellipses (ears, buns).  Coverage comes from the signed distance (half a
pixel of ramp, so edges are antialiased without extra samples), shading from the
surface normal of the swept shape under one fixed light, and cloth colour from a
:class:`Material` evaluated in *body* coordinates: ``s`` along the part and ``arc``
around it.  Because ``arc`` subtracts the view yaw, a pattern turns with the body.

:class:`FigureCanvas` composites through a z-buffer and records the owner part of each
pixel, which the annotator uses to decide which joints are hidden.  Asked to
(``record_surface``), it also records each pixel's point in its part's own frame and the
garment there: the ground truth of :mod:`datasets.synthetic.groundtruth`.  The point is the
pattern's own coordinates (``s`` along, the angle around), so equal points have equal cloth
colour in every view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

RGB = tuple[float, float, float]
PatternKind = Literal["solid", "hstripes", "vstripes", "checks", "dots"]

_LIGHT = np.array([-0.35, -0.55, 0.76]) / np.linalg.norm([-0.35, -0.55, 0.76])
_AMBIENT, _DIFFUSE = 0.58, 0.47


@dataclass(frozen=True)
class Material:
    """A cloth (or skin) colour with an optional two-colour pattern in body units."""

    color: RGB
    pattern: PatternKind = "solid"
    color2: RGB = (1.0, 1.0, 1.0)
    period: float = 0.05  # body units (fraction of body height)
    duty: float = 0.45  # fraction of the period covered by color2


def rot_y(deg: float) -> np.ndarray:
    """Rotation about the vertical axis; matches x' = x cos + z sin, z' = -x sin + z cos."""
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


# --------------------------------------------------------------------------- raster core


class FigureCanvas:
    """Colour buffer plus z-buffer and owner buffer, at the supersampled resolution; with
    ``record_surface`` also the part-frame point (NaN where the owner has no frame) and garment
    id (0 none) of every pixel."""

    def __init__(self, background: np.ndarray, record_surface: bool = False) -> None:
        self.rgb = background.astype(np.float32, copy=True)
        h, w = self.rgb.shape[:2]
        self.z = np.full((h, w), -np.inf, np.float32)
        self.owner = np.full((h, w), -1, np.int16)
        self.surface = np.full((h, w, 3), np.nan, np.float32) if record_surface else None
        self.garment = np.zeros((h, w), np.uint8) if record_surface else None

    def grid(self, x0: float, y0: float, x1: float, y1: float):
        """Pixel-centre grids of the clipped box, or None when it is off the canvas."""
        h, w = self.z.shape
        i0, i1 = max(math.floor(y0), 0), min(math.ceil(y1) + 1, h)
        j0, j1 = max(math.floor(x0), 0), min(math.ceil(x1) + 1, w)
        if i0 >= i1 or j0 >= j1:
            return None
        ys = np.arange(i0, i1, dtype=np.float32)[:, None]
        xs = np.arange(j0, j1, dtype=np.float32)[None, :]
        return (slice(i0, i1), slice(j0, j1)), xs, ys

    def paint(
        self,
        sl,
        alpha: np.ndarray,
        color: np.ndarray,
        depth: np.ndarray,
        owner: int,
        covers: tuple[int, ...] = (),
        surface: np.ndarray | None = None,
        garment: np.ndarray | int = 0,
    ) -> None:
        """Composite where this part is in front (or over a part it ``covers``, as a skirt covers
        the thighs whatever their depth); claim the pixel when mostly covered.  A claimed pixel
        takes ``surface`` ([h,w,3] part-frame point, NaN where undefined; None: no frame) and
        ``garment`` when the canvas records them."""
        front = depth >= self.z[sl]
        if covers:
            front |= np.isin(self.owner[sl], covers)
        a = np.where(front, alpha, 0.0).astype(np.float32)
        region = self.rgb[sl]
        region += (color - region) * a[..., None]
        claim = front & (alpha > 0.5)
        self.z[sl] = np.where(claim, depth, self.z[sl])
        self.owner[sl] = np.where(claim, owner, self.owner[sl])
        if self.surface is not None:
            # A point only where this part alone gives the colour: a pixel it covers partly (its
            # antialiased edge) blends two surfaces, so it keeps no point, whoever owns it.
            point = np.float32(np.nan) if surface is None else surface
            clean = claim & (alpha >= 1.0)
            blended = front & (alpha > 0.0) & ~clean
            old = np.where(blended[..., None], np.float32(np.nan), self.surface[sl])
            self.surface[sl] = np.where(clean[..., None], point, old)
            assert self.garment is not None  # recorded with the surface
            self.garment[sl] = np.where(claim, garment, self.garment[sl])


def cylinder_point(angle: np.ndarray, s: np.ndarray, radius: float, valid: np.ndarray) -> np.ndarray:
    """Part-frame point of a swept part: ``s`` along its axis and ``angle`` around it (0 = the
    body's front), placed on a cylinder of the part's mean ``radius`` so that the front and back
    of a limb are distinct points and the angle needs no wrap-around; NaN where not ``valid``."""
    out = np.stack([radius * np.sin(angle), s, radius * np.cos(angle)], axis=-1).astype(np.float32)
    out[~valid] = np.nan
    return out


def shade(nx: np.ndarray, ny: np.ndarray, nz: np.ndarray) -> np.ndarray:
    lam = nx * _LIGHT[0] + ny * _LIGHT[1] + nz * _LIGHT[2]
    return _AMBIENT + _DIFFUSE * np.maximum(lam, 0.0)


def lighting(ctx: Projector, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray) -> np.ndarray:
    """Shading of a part, or 1 everywhere for an unshaded (albedo) render."""
    return shade(nx, ny, nz) if ctx.shading else np.ones(np.shape(nz))


def smooth_band(x: np.ndarray, half_width: float, fw: np.ndarray | float) -> np.ndarray:
    """Antialiased indicator of |x| < half_width with a filter width ``fw``."""
    return np.clip((half_width - np.abs(x)) / fw + 0.5, 0.0, 1.0)


def _stripe(x: np.ndarray, period: float, duty: float, fw: np.ndarray | float) -> np.ndarray:
    phase = np.mod(x, period) - period / 2
    return smooth_band(phase, duty * period / 2, fw)


def pattern_mix(mat: Material, arc: np.ndarray, s: np.ndarray, fw_arc, fw_s) -> np.ndarray | None:
    """Fraction of ``mat.color2`` at body coordinates (arc around, s along); None if solid."""
    p, d = mat.period, mat.duty
    if mat.pattern == "hstripes":
        return _stripe(s, p, d, fw_s)
    if mat.pattern == "vstripes":
        return _stripe(arc, p, d, fw_arc)
    if mat.pattern == "checks":  # gingham: the crossing of both stripe sets is darkest
        return 0.5 * (_stripe(s, p, d, fw_s) + _stripe(arc, p, d, fw_arc))
    if mat.pattern == "dots":
        row = np.floor(s / p)
        shift = np.where(np.mod(row, 2.0) == 1.0, p / 2, 0.0)  # staggered rows
        dx = np.mod(arc + shift, p) - p / 2
        dy = np.mod(s, p) - p / 2
        return np.clip((d * p / 2 - np.hypot(dx, dy)) / np.maximum(fw_arc, fw_s) + 0.5, 0.0, 1.0)
    return None


def material_rgb(mat: Material, arc, s, fw_arc, fw_s) -> np.ndarray:
    base = np.asarray(mat.color, np.float32)
    m = pattern_mix(mat, arc, s, fw_arc, fw_s)
    if m is None:
        return np.broadcast_to(base, np.shape(s) + (3,)).astype(np.float32)
    return base + (np.asarray(mat.color2, np.float32) - base) * m[..., None].astype(np.float32)


def choose(masks_and_colors: list[tuple[np.ndarray, np.ndarray]], default: np.ndarray) -> np.ndarray:
    out = default
    for mask, color in masks_and_colors:
        out = np.where(mask[..., None], color, out)
    return out


# --------------------------------------------------------------------------- part drawers


@dataclass
class Projector:
    """Per-image drawing context: projection and unit conversions."""

    canvas: FigureCanvas
    px_per_unit: float  # canvas pixels per body unit
    yaw: float  # degrees
    rot: np.ndarray  # view rotation
    cx: float
    cy: float  # canvas position of the pelvis
    shading: bool = True  # False: albedo only, so a body point has one colour in every view

    def to_view(self, p: np.ndarray) -> np.ndarray:
        """Body units -> canvas (x, y) and depth z (canvas pixels toward the camera)."""
        q = self.rot @ p
        return np.array(
            [self.cx + q[0] * self.px_per_unit, self.cy + q[1] * self.px_per_unit, q[2] * self.px_per_unit]
        )


Band = tuple[float, Material]  # (end as a fraction along the part, material up to there)


def draw_capsule(
    ctx: Projector,
    owner: int,
    a3: np.ndarray,
    b3: np.ndarray,
    r0: float,
    r1: float,
    bands: list[Band],
    roll: float = 0.0,
    garments: tuple[int, ...] = (),
) -> None:
    """A tapered limb from ``a3`` to ``b3`` (body units), radii in body units; ``garments`` are
    the garment ids of ``bands`` (recorded only)."""
    pa, pb = ctx.to_view(a3), ctx.to_view(b3)
    k = ctx.px_per_unit
    ra, rb = r0 * k, r1 * k
    rmax = max(ra, rb) + 1.5
    g = ctx.canvas.grid(
        min(pa[0], pb[0]) - rmax, min(pa[1], pb[1]) - rmax, max(pa[0], pb[0]) + rmax, max(pa[1], pb[1]) + rmax
    )
    if g is None:
        return
    sl, X, Y = g
    dx, dy = pb[0] - pa[0], pb[1] - pa[1]
    l2 = max(dx * dx + dy * dy, 1e-6)
    u_line = ((X - pa[0]) * dx + (Y - pa[1]) * dy) / l2
    u = np.clip(u_line, 0.0, 1.0)
    ox, oy = X - (pa[0] + u * dx), Y - (pa[1] + u * dy)
    r = ra + (rb - ra) * u
    dist = np.hypot(ox, oy)
    alpha = np.clip(r - dist + 0.5, 0.0, 1.0)
    if not alpha.any():
        return
    nx, ny = ox / r, oy / r
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.0, 1.0))
    depth = pa[2] + u * (pb[2] - pa[2]) + r * nz
    # Body coordinates: s along the 3-D limb, arc around it (turns with the view yaw).
    length3 = float(np.linalg.norm(b3 - a3))
    ln = math.sqrt(l2)
    v = np.clip((ox * dy - oy * dx) / ln / r, -1.0, 1.0)  # signed across the limb
    r_body = 0.5 * (r0 + r1)
    arc = (np.arcsin(v) - math.radians(ctx.yaw) + roll) * r_body
    s = u * length3
    fw_s = 1.0 / k
    fw_arc = fw_s / np.maximum(nz, 0.25)
    colors = [(u <= end, material_rgb(mat, arc, s, fw_arc, fw_s)) for end, mat in reversed(bands)]
    color = choose(colors[1:], colors[0][1])
    # Hems: a thin dark line where one band meets the next.
    for end, _ in bands[:-1]:
        color = color * (1.0 - 0.35 * smooth_band((u - end) * length3, 0.004, fw_s))[..., None]
    surface: np.ndarray | None = None
    garment: np.ndarray | int = 0
    if ctx.canvas.surface is not None:
        # The rounded end caps all share the coordinates of the rim (u clipped): no frame there.
        cap = (u_line < 0.0) | (u_line > 1.0)
        surface = cylinder_point(np.arcsin(v) - math.radians(ctx.yaw) + roll, s, r_body, ~cap)
        if garments:  # the same band order as the colours: earlier bands win where u <= end
            garment = np.full(u.shape, garments[-1], np.uint8)
            for (end, _), g in zip(reversed(bands[:-1]), reversed(garments[:-1])):
                garment = np.where(u <= end, np.uint8(g), garment)
    ctx.canvas.paint(
        sl,
        alpha,
        color * lighting(ctx, nx, ny, nz)[..., None],
        depth,
        owner,
        surface=surface,
        garment=garment,
    )


@dataclass(frozen=True)
class RibbonShape:
    """A tapered rounded box along an axis: the torso, a skirt or hanging hair."""

    widths: tuple[tuple[float, float, float], ...]  # (u, half-width W, half-depth D) body units
    corner: float  # corner radius, body units
    yaw: float  # yaw of the cross-sections (degrees), for silhouette width and pattern angle


def _ribbon_geometry(ctx: Projector, a3: np.ndarray, b3: np.ndarray, shape: RibbonShape):
    pa, pb = ctx.to_view(a3), ctx.to_view(b3)
    k = ctx.px_per_unit
    t = math.radians(shape.yaw)
    us = np.array([w[0] for w in shape.widths])
    half_w = np.array([math.hypot(w[1] * math.cos(t), w[2] * math.sin(t)) for w in shape.widths]) * k
    front = np.array([math.hypot(w[1] * math.sin(t), w[2] * math.cos(t)) for w in shape.widths]) * k
    return pa, pb, us, half_w, front


def draw_ribbon(
    ctx: Projector,
    owner: int,
    a3: np.ndarray,
    b3: np.ndarray,
    shape: RibbonShape,
    region_colors,
    covers: tuple[int, ...] = (),
    region_garments=0,
) -> None:
    """Draw a ribbon; ``region_colors(arc, s, v, fw_arc, fw_s)`` gives its cloth colours and
    ``region_garments`` its garment ids (an int, or ``f(angle, r_body, s)``; recorded only)."""
    pa, pb, us, half_w, front = _ribbon_geometry(ctx, a3, b3, shape)
    k = ctx.px_per_unit
    wmax = float(half_w.max()) + 1.5
    g = ctx.canvas.grid(
        min(pa[0], pb[0]) - wmax, min(pa[1], pb[1]) - wmax, max(pa[0], pb[0]) + wmax, max(pa[1], pb[1]) + wmax
    )
    if g is None:
        return
    sl, X, Y = g
    dx, dy = pb[0] - pa[0], pb[1] - pa[1]
    ln = max(math.hypot(dx, dy), 1e-3)
    ax, ay = dx / ln, dy / ln
    along = (X - pa[0]) * ax + (Y - pa[1]) * ay
    across = (X - pa[0]) * ay - (Y - pa[1]) * ax  # +x on screen for a downward axis
    u = np.clip(along / ln, 0.0, 1.0)
    hw = np.interp(u, us, half_w)
    rc = min(shape.corner * k, float(half_w.min()) * 0.9, ln * 0.45)
    qx = np.abs(across) - hw + rc
    qy = np.abs(along - ln / 2) - ln / 2 + rc
    sdf = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - rc
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)
    if not alpha.any():
        return
    v = np.clip(across / hw, -1.0, 1.0)
    nz = np.sqrt(1.0 - v * v)
    depth = pa[2] + u * (pb[2] - pa[2]) + np.interp(u, us, front) * nz
    r_body = float(np.mean([0.5 * (w[1] + w[2]) for w in shape.widths]))
    angle = np.arcsin(v) - math.radians(shape.yaw)
    angle = np.mod(angle + math.pi, 2 * math.pi) - math.pi  # 0 = the body's front
    s = u * float(np.linalg.norm(b3 - a3))
    fw_s = 1.0 / k
    fw_arc = fw_s / np.maximum(nz, 0.25)
    color = region_colors(angle, r_body, s, fw_arc, fw_s)
    lit = lighting(ctx, v * ay, -v * ax, nz)
    surface: np.ndarray | None = None
    garment: np.ndarray | int = 0
    if ctx.canvas.surface is not None:
        inside = (along >= 0.0) & (along <= ln) & (np.abs(across) <= hw)
        surface = cylinder_point(angle, s, r_body, inside)
        garment = region_garments(angle, r_body, s) if callable(region_garments) else region_garments
    ctx.canvas.paint(
        sl, alpha, color * lit[..., None], depth, owner, covers, surface=surface, garment=garment
    )


def plain_colors(mat: Material):
    def colors(angle, r_body, s, fw_arc, fw_s):
        return material_rgb(mat, angle * r_body, s, fw_arc, fw_s)

    return colors


def draw_disc(
    ctx: Projector,
    owner: int,
    c: np.ndarray,
    radius: float,
    color: RGB,
    squash: float = 1.0,
    bias: float = 0.0,
    garment: int = 0,
) -> None:
    """A small shaded ellipse (ears, a hair bun) at canvas point ``c``; ``bias`` lifts its depth.
    It has no part frame (a flat disc facing the camera in every view)."""
    r = radius * ctx.px_per_unit
    g = ctx.canvas.grid(c[0] - r - 2, c[1] - r - 2, c[0] + r + 2, c[1] + r + 2)
    if g is None:
        return
    sl, X, Y = g
    nx, ny = (X - c[0]) / (r * squash), (Y - c[1]) / r
    d = np.sqrt(nx * nx + ny * ny)
    alpha = np.clip((1.0 - d) * r + 0.5, 0.0, 1.0)
    nz = np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0))
    col = np.asarray(color, np.float32) * lighting(ctx, nx, ny, nz)[..., None] * 0.93
    ctx.canvas.paint(sl, alpha, col, c[2] + bias + r * nz * 0.3, owner, garment=garment)
