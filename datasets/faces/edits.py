"""The landmark edit model: small parametric edits of 68 iBUG landmarks, and face driving.

All functions are pure: they take float landmarks [68, 2] (x, y) in pixels, -1 for
missing points, and return a new array; missing points stay missing.

Face frame.  Edits are expressed in a frame measured on the face itself, so an
edit means the same on a rotated, scaled or yawed face:

* origin ``O`` = midpoint of the two eye centres (each eye's centre is the midpoint
  of its corners 36/39 and 42/45, which do not move when the lids do);
* x axis along the eye line, y axis perpendicular to it (down the face);
* horizontal unit = the eye distance ``|c_left - c_right|`` (foreshortens with yaw,
  as horizontal offsets should); vertical unit = the eye-line-to-nose-base (33)
  distance divided by the template's ratio, so that both units are one eye
  distance on a frontal face.

The eye corners and point 33 must be present; otherwise the edit raises ValueError.

Edits (strength ranges are inclusive; outside -> ValueError naming edit and range):

=================  ==========  =============================================================
edit               range       what moves (frame units)
=================  ==========  =============================================================
rotate(θ)          [-45, 45]°  every point, counter-clockwise on screen about face_centre
shift(dx, dy)      ±frame/2    every point by (dx, dy) pixels; needs the frame (H, W)
mouth_open(a)      [-1, 1]     a ≥ 0: the chin drops by JAW_DROP·a; the jaw and the lower lip
                               follow in proportion to their height ``u`` between the jaw top
                               (0/16) and the chin (8) - a vertical stretch of the lower face -
                               and the mouth corners by 35% of the lower lip's drop.  a < 0:
                               closes the current lip gap by the fraction |a| (exact inverse).
smile(a)           [-1, 1]     mouth corners out by 0.06a and up by 0.07a, lip points near
                               the corners partly, lower lids up by 0.02a (a > 0: cheeks);
                               a < 0 is a frown (corners down and in)
eyes_closed(a)     [-1, 1]     a ≥ 0: upper lids move the fraction a towards the lower lids
                               (1 = closed); a < 0: upper lids rise by 0.06|a| (wide eyes)
brows(a)           [-1, 1]     brows up by 0.12a; a < 0 also pulls the inner ends 0.04|a|
                               towards the midline and 0.03|a| further down (a frown)
=================  ==========  =============================================================

``drive(source, driving)`` transfers expression and head pose; see its docstring.
The synthetic portrait generator builds its expressions with these same functions,
so the edit model and the training data agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from datasets.pose.landmarks import MISSING, NUM_LANDMARKS, flip_permutation, visible

ROTATE_RANGE = (-45.0, 45.0)
STRENGTH_RANGE = (-1.0, 1.0)
JAW_DROP = 0.5  # chin drop at mouth_open(1), in eye distances
RIGID_POINTS: tuple[int, ...] = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
_UPPER_LIDS, _LOWER_LIDS = (37, 38, 43, 44), (41, 40, 47, 46)
_LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
_CORNERS = (48, 54, 60, 64)


def _check(edit: str, value: float, lo: float, hi: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{edit}: strength {value!r} is outside its valid range [{lo:g}, {hi:g}]")
    return float(value)


def _as_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.array(landmarks, np.float64, copy=True)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected landmarks of shape (68, 2), got {lm.shape}")
    return lm


def _finish(lm: np.ndarray, vis: np.ndarray) -> np.ndarray:
    out = lm.astype(np.float32)
    out[~vis] = MISSING
    return out


@cache
def template() -> tuple[np.ndarray, np.ndarray]:
    """The mean synthetic face: frontal neutral (x, y) [68, 2] and depths z [68], head units."""
    from datasets.synthetic.portrait_geometry import FaceShape, landmark_geometry, neutral_landmarks

    shape = FaceShape()
    frontal = neutral_landmarks(shape)
    xyz, _ = landmark_geometry(frontal, shape, 0.0)
    return frontal, xyz[:, 2]


def _eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (lm[36] + lm[39]) / 2.0, (lm[42] + lm[45]) / 2.0


@cache
def _nose_ratio() -> float:
    t, _ = template()
    cr, cl = _eye_centres(t)
    return float((t[33, 1] - (cr[1] + cl[1]) / 2.0) / np.linalg.norm(cl - cr))


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(origin, x axis, y axis, horizontal unit, vertical unit) of the face frame, in pixels."""
    lm = np.asarray(landmarks, np.float64)
    vis = visible(lm)
    need = [i for i in (33, 36, 39, 42, 45) if not vis[i]]
    if need:
        raise ValueError(f"the face frame needs the eye corners and the nose base; missing points {need}")
    cr, cl = _eye_centres(lm)
    origin = (cr + cl) / 2.0
    sx = float(np.linalg.norm(cl - cr))
    if sx < 1e-6:
        raise ValueError("the face frame needs distinct eye centres")
    ex = (cl - cr) / sx
    ey = np.array([-ex[1], ex[0]])
    sy = float((lm[33] - origin) @ ey) / _nose_ratio()
    if sy <= 1e-6:
        raise ValueError("the nose base (33) must lie below the eye line")
    return origin, ex, ey, sx, sy


def _move(lm: np.ndarray, offsets: dict[int, tuple[float, float]]) -> np.ndarray:
    """Apply frame-unit offsets {index: (dx, dy)} to a copy of ``lm``."""
    _, ex, ey, sx, sy = face_frame(lm)
    out = lm.copy()
    for i, (dx, dy) in offsets.items():
        out[i] += dx * sx * ex + dy * sy * ey
    return out


def face_centre(landmarks: np.ndarray) -> np.ndarray:
    """Mean of the visible rigid points (nose and eye corners): moves with the head, not with expressions."""
    lm = np.asarray(landmarks, np.float64)
    idx = [i for i in RIGID_POINTS if visible(lm)[i]]
    if not idx:
        raise ValueError("face centre: none of the nose and eye-corner points is present")
    return lm[idx].mean(0)


def rotate(landmarks: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise on screen by ``degrees`` about :func:`face_centre`."""
    a = math.radians(_check("rotate", degrees, *ROTATE_RANGE))
    lm = _as_landmarks(landmarks)
    vis = visible(lm)
    c0 = face_centre(lm)
    d = lm - c0
    c, s = math.cos(a), math.sin(a)
    out = c0 + np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], 1)
    return _finish(out, vis)


def shift(landmarks: np.ndarray, dx: float, dy: float, frame: tuple[int, int]) -> np.ndarray:
    """Translate by (dx, dy) pixels; each must lie within half the frame (H, W)."""
    h, w = frame
    _check("shift dx", dx, -w / 2.0, w / 2.0)
    _check("shift dy", dy, -h / 2.0, h / 2.0)
    lm = _as_landmarks(landmarks)
    vis = visible(lm)
    return _finish(lm + np.array([dx, dy]), vis)


def _frame_coords(lm: np.ndarray) -> np.ndarray:
    origin, ex, ey, sx, sy = face_frame(lm)
    d = lm - origin
    return np.stack([d @ ex / sx, d @ ey / sy], 1)


def _jaw_heights(lm: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """u in [0, 1] of every point between the jaw top (mean of 0/16) and the chin (8), frame units."""
    f = _frame_coords(lm)
    tops = [i for i in (0, 16) if vis[i]]
    t, _ = template()
    tf = _frame_coords(t)
    top = f[tops, 1].mean() if tops else tf[0, 1]
    chin = f[8, 1] if vis[8] else tf[8, 1]
    return np.clip((f[:, 1] - top) / max(chin - top, 1e-6), 0.0, 1.0)


def lip_gap(landmarks: np.ndarray) -> float:
    """Inner lip gap (66 below 62) in vertical frame units; 0 for a closed mouth."""
    f = _frame_coords(np.asarray(landmarks, np.float64))
    return float(f[66, 1] - f[62, 1])


def mouth_open(landmarks: np.ndarray, strength: float) -> np.ndarray:
    """Open (strength > 0) or close (< 0) the mouth; see the module table."""
    a = _check("mouth_open", strength, *STRENGTH_RANGE)
    lm = _as_landmarks(landmarks)
    vis = visible(lm)
    u = _jaw_heights(lm, vis)
    # Points that follow the stretch keep their u, so the lower lip's u is the same before and
    # after an edit; tying the corners to it (not to their own u) makes closing undo opening.
    u_lip = next((u[i] for i in (66, 57, 65, 67) if vis[i]), 0.5)
    if a >= 0:
        drop = JAW_DROP * a
    else:  # close the current gap by the fraction |a|: the inner lower lip rises by |a|·gap
        if not (vis[62] and vis[66]):
            raise ValueError("mouth_open: closing needs the inner lip mid points 62 and 66")
        drop = a * max(lip_gap(lm), 0.0) / max(u_lip, 1e-6)
    offsets = {i: (0.0, drop * u[i]) for i in range(17)}
    offsets.update({i: (0.0, drop * u[i]) for i in _LOWER_LIP})
    offsets.update({i: (0.0, 0.35 * drop * u_lip) for i in _CORNERS})
    return _finish(_move(lm, offsets), vis)


def _smile_offsets(a: float) -> dict[int, tuple[float, float]]:
    offsets: dict[int, tuple[float, float]] = {}
    # (index, side: -1 image-left / +1 image-right, weight)
    for idx, side, wgt in (
        (48, -1, 1.0),
        (60, -1, 1.0),
        (54, 1, 1.0),
        (64, 1, 1.0),
        (49, -1, 0.55),
        (59, -1, 0.55),
        (53, 1, 0.55),
        (55, 1, 0.55),
        (61, -1, 0.5),
        (67, -1, 0.5),
        (63, 1, 0.5),
        (65, 1, 0.5),
        (50, -1, 0.2),
        (58, -1, 0.2),
        (52, 1, 0.2),
        (56, 1, 0.2),
    ):
        offsets[idx] = (side * 0.06 * a * wgt, -0.07 * a * wgt)
    offsets[57] = (0.0, 0.015 * a)
    if a > 0:  # cheeks push the lower lids up
        for i in (40, 41, 46, 47):
            offsets[i] = (0.0, -0.02 * a)
    return offsets


def _brow_offsets(a: float) -> dict[int, tuple[float, float]]:
    offsets = {i: (0.0, -0.12 * a) for i in range(17, 27)}
    if a < 0:  # frown: inner ends knit towards the midline and drop further
        for idx, side, wgt in ((21, -1, 1.0), (20, -1, 0.5), (22, 1, 1.0), (23, 1, 0.5)):
            offsets[idx] = (-side * 0.04 * -a * wgt, -0.12 * a + 0.03 * -a * wgt)
    return offsets


def _negated(offsets: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    return {i: (-dx, -dy) for i, (dx, dy) in offsets.items()}


def smile(landmarks: np.ndarray, strength: float) -> np.ndarray:
    """Lift (strength > 0) or lower (< 0) the mouth corners; see the module table."""
    a = _check("smile", strength, *STRENGTH_RANGE)
    lm = _as_landmarks(landmarks)
    return _finish(_move(lm, _smile_offsets(a)), visible(lm))


def eyes_closed(landmarks: np.ndarray, strength: float) -> np.ndarray:
    """Close (strength > 0) or widen (< 0) both eyes; see the module table."""
    a = _check("eyes_closed", strength, *STRENGTH_RANGE)
    lm = _as_landmarks(landmarks)
    vis = visible(lm)
    out = lm.copy()
    if a >= 0:
        for up, lo in zip(_UPPER_LIDS, _LOWER_LIDS):
            out[up] = lm[up] + a * (lm[lo] - lm[up])
    else:
        out = _move(lm, {i: (0.0, 0.06 * a) for i in _UPPER_LIDS})
    return _finish(out, vis)


def brows(landmarks: np.ndarray, strength: float) -> np.ndarray:
    """Raise (strength > 0) or lower and knit (< 0) the brows; see the module table."""
    a = _check("brows", strength, *STRENGTH_RANGE)
    lm = _as_landmarks(landmarks)
    return _finish(_move(lm, _brow_offsets(a)), visible(lm))


@dataclass(frozen=True)
class Expression:
    """Strengths of the four expression edits (each in [-1, 1], see the module table)."""

    mouth_open: float = 0.0
    smile: float = 0.0
    eyes_closed: float = 0.0
    brows: float = 0.0


def apply_expression(landmarks: np.ndarray, expression: Expression) -> np.ndarray:
    """All four expression edits in a fixed order: brows, eyes, smile, mouth."""
    out = brows(landmarks, expression.brows)
    out = eyes_closed(out, expression.eyes_closed)
    out = smile(out, expression.smile)
    return mouth_open(out, expression.mouth_open)


def clip_to_frame(landmarks: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """Mark points whose pixel falls outside the frame (H, W) as missing."""
    h, w = frame
    lm = np.array(landmarks, np.float32, copy=True)
    bad = (
        ~visible(lm) | (lm[:, 0] <= -0.5) | (lm[:, 1] <= -0.5) | (lm[:, 0] >= w - 0.5) | (lm[:, 1] >= h - 0.5)
    )
    lm[bad] = MISSING
    return lm


# --- driving -----------------------------------------------------------------------------------
#
# drive() works on "canonical" shapes: landmarks with roll, scale, translation and yaw removed,
# in eye distances, eye midpoint at CANON_ORIGIN (an offset that keeps every coordinate far
# from the -1 "missing" marker).

CANON_ORIGIN = 10.0
_MIDLINE = (27, 28, 29, 30, 33, 51, 57, 62, 66, 8)
EYE_DEADZONE = 0.25  # |1 - openness/template| below this is identity, not expression
BROW_DEADZONE = 0.06  # brow height deviations (eye distances) below this are identity


@dataclass(frozen=True)
class LandmarkPose:
    """Pose of a face in an image, as estimated from its landmarks."""

    origin: np.ndarray  # eye midpoint (pixels)
    ex: np.ndarray  # unit eye-line direction (roll)
    ey: np.ndarray
    scale: float  # pixels per eye distance, corrected for yaw foreshortening
    yaw_deg: float


@cache
def _template_canon() -> tuple[np.ndarray, np.ndarray]:
    """Template shape in eye distances (eye midpoint at the origin) and depths relative to the eyes."""
    t, z = template()
    cr, cl = _eye_centres(t)
    iod = float(np.linalg.norm(cl - cr))
    zo = z[[36, 39, 42, 45]].mean()
    return (t - (cr + cl) / 2.0) / iod, (z - zo) / iod


def estimate_pose(landmarks: np.ndarray) -> LandmarkPose:
    """Roll from the eye line, yaw from the sideways shift of midline points (nose most) against
    the template's depths (``shift = depth · tan ψ`` in eye distances), scale from the eye distance."""
    lm = np.asarray(landmarks, np.float64)
    origin, ex, ey, sx, _ = face_frame(lm)
    _, dz = _template_canon()
    vis = visible(lm)
    mid = [i for i in _MIDLINE if vis[i]]
    m = (lm[mid] - origin) @ ex / sx
    tan = float(m @ dz[mid] / max(dz[mid] @ dz[mid], 1e-9))
    yaw = math.atan(tan)
    return LandmarkPose(origin, ex, ey, sx / math.cos(yaw), math.degrees(yaw))


def canonical(landmarks: np.ndarray) -> tuple[np.ndarray, LandmarkPose]:
    """Frontalised shape (eye distances, offset by CANON_ORIGIN) and the pose that was removed.

    Missing points are filled: from the mirror point when that is present (faces are
    nearly symmetric), else from the template fitted by scale and shift to the present points.
    """
    lm = np.asarray(landmarks, np.float64)
    vis = visible(lm)
    pose = estimate_pose(lm)
    t, dz = _template_canon()
    d = (lm - pose.origin) / pose.scale
    a, b = d @ pose.ex, d @ pose.ey
    yaw = math.radians(pose.yaw_deg)
    c = np.stack([(a - dz * math.sin(yaw)) / math.cos(yaw), b], 1)
    if not vis.all():
        perm = flip_permutation()
        k = np.flatnonzero(vis)
        tc = t[k] - t[k].mean(0)
        s = float((tc * (c[k] - c[k].mean(0))).sum() / max((tc * tc).sum(), 1e-9))
        fitted = s * (t - t[k].mean(0)) + c[k].mean(0)
        for i in np.flatnonzero(~vis):
            j = perm[i]
            c[i] = (-c[j, 0], c[j, 1]) if vis[j] and j != i else fitted[i]
    return c + CANON_ORIGIN, pose


def _eye_openness(c: np.ndarray) -> float:
    r = []
    for up, lo, (o, i) in (((37, 38), (41, 40), (36, 39)), ((43, 44), (47, 46), (42, 45))):
        width = np.linalg.norm(c[i] - c[o])
        r.append((c[list(lo), 1].mean() - c[list(up), 1].mean()) / max(width, 1e-9))
    return float(np.mean(r))


def _brow_height(c: np.ndarray) -> float:
    cr, cl = _eye_centres(c)
    return float((cr[1] + cl[1]) / 2.0 - c[17:27, 1].mean())


def _corner_lift(c: np.ndarray) -> float:
    return float(c[62, 1] - (c[48, 1] + c[54, 1]) / 2.0)


def _deadzone(x: float, tau: float) -> float:
    return math.copysign(max(abs(x) - tau, 0.0), x)


@cache
def _responses() -> dict[str, float]:
    """How the template's measures move per unit strength of each edit."""
    t = _template_canon()[0] + CANON_ORIGIN
    return {
        "smile": _corner_lift(smile(t, 1.0)) - _corner_lift(t),
        "brows": _brow_height(brows(t, 1.0)) - _brow_height(t),
        "wide": _eye_openness(eyes_closed(t, -1.0)) / _eye_openness(t) - 1.0,
        "openness": _eye_openness(t),
        "lift": _corner_lift(t),
        "brow_height": _brow_height(t),
    }


def expression_state(landmarks: np.ndarray, *, frontal: bool = False) -> Expression:
    """Estimated expression strengths of a face, relative to the template's neutral face.

    ``mouth_open`` is exact (the lip gap is identity-free); ``smile`` reads the corner lift
    after closing the mouth; ``eyes_closed`` and ``brows`` compare with the template and
    ignore deviations within :data:`EYE_DEADZONE` / :data:`BROW_DEADZONE` (the range over
    which people differ at rest), so they are estimates.  Values may exceed [-1, 1].
    """
    c = np.asarray(landmarks, np.float64) if frontal else canonical(landmarks)[0]
    resp = _responses()
    t = _template_canon()[0] + CANON_ORIGIN
    gap_unit = lip_gap(mouth_open(t, 1.0))
    closed = mouth_open(c, -1.0)
    rel = 1.0 - _eye_openness(c) / resp["openness"]
    eyes = _deadzone(rel, EYE_DEADZONE)
    eyes = eyes / (1.0 - EYE_DEADZONE) if eyes > 0 else eyes / resp["wide"]
    return Expression(
        mouth_open=max(lip_gap(c), 0.0) / gap_unit,
        smile=(_corner_lift(closed) - resp["lift"]) / resp["smile"],
        eyes_closed=eyes,
        brows=_deadzone(_brow_height(c) - resp["brow_height"], BROW_DEADZONE) / resp["brows"],
    )


def expression_measures(landmarks: np.ndarray) -> dict[str, float]:
    """The raw quantities behind :func:`expression_state`, on the frontalised face, with no dead
    zone and no clamp, so that any change shows: ``mouth_open`` the lip gap, ``eyes_closed`` minus the
    eye opening (both in template units), ``smile`` the corner lift with the mouth closed and
    ``brows`` the brow height (eye distances).  Each grows with its edit's strength."""
    c = canonical(landmarks)[0]
    return {
        "mouth_open": lip_gap(c),
        "smile": _corner_lift(mouth_open(c, -1.0)),
        "eyes_closed": -_eye_openness(c),
        "brows": _brow_height(c),
    }


def _clamp(x: float) -> float:
    return min(max(x, -1.0), 1.0)


def _neutralise(c: np.ndarray, state: Expression) -> np.ndarray:
    """Undo an estimated expression on a canonical shape (inverse edits, in reverse order)."""
    out = mouth_open(c, -1.0)
    out = _move(out.astype(np.float64), _negated(_smile_offsets(_clamp(state.smile))))
    k = _clamp(state.eyes_closed)
    if k > 0:
        for up, lo in zip(_UPPER_LIDS, _LOWER_LIDS):
            if k < 0.9:
                out[up] = out[lo] + (out[up] - out[lo]) / (1.0 - k)
            else:  # a (nearly) closed eye holds no lid shape: borrow the template's
                t = _template_canon()[0] + CANON_ORIGIN
                width = np.linalg.norm(out[39] - out[36]) / np.linalg.norm(t[39] - t[36])
                out[up] = out[lo] + (t[up] - t[lo]) * width
    elif k < 0:
        out = _move(out, {i: (0.0, 0.06 * k) for i in _UPPER_LIDS})
    return _move(out, _negated(_brow_offsets(_clamp(state.brows))))


def drive(source: np.ndarray, driving: np.ndarray, frame: tuple[int, int] | None = None) -> np.ndarray:
    """Landmarks of the source identity with the driving face's expression and head pose.

    1. Both faces are frontalised (:func:`canonical`): roll and scale from the eye line,
       yaw from the midline points against the template's depths, hidden points filled.
    2. The source's own expression is estimated (:func:`expression_state`) and undone,
       leaving a neutral estimate that keeps its identity geometry (face outline, eye,
       brow, nose and mouth shapes and spacing).
    3. The driving face's estimated expression is applied to that neutral with the same
       edit functions (the lip gap is matched exactly, in eye distances).
    4. The result is posed with the driving face's yaw (template depths), roll and eye
       midpoint position, at the source's own scale.  Points hidden in the driving face
       are hidden in the result; with ``frame`` (H, W), points outside it become missing.
    """
    src, src_pose = canonical(_as_landmarks(source))
    drv_lm = _as_landmarks(driving)
    drv, drv_pose = canonical(drv_lm)
    want = expression_state(drv, frontal=True)
    out = _neutralise(src, expression_state(src, frontal=True))
    out = brows(out, _clamp(want.brows))
    out = eyes_closed(out, _clamp(want.eyes_closed))
    out = smile(out, _clamp(want.smile))
    per_unit = lip_gap(mouth_open(out, 1.0)) - lip_gap(out)
    target = max(lip_gap(drv), 0.0) - max(lip_gap(out), 0.0)
    out = mouth_open(out, _clamp(target / per_unit if per_unit > 1e-9 else 0.0)).astype(np.float64)
    _, dz = _template_canon()
    yaw = math.radians(drv_pose.yaw_deg)
    rel = out - CANON_ORIGIN
    a = rel[:, 0] * math.cos(yaw) + dz * math.sin(yaw)
    pts = drv_pose.origin + src_pose.scale * (a[:, None] * drv_pose.ex + rel[:, 1:2] * drv_pose.ey)
    result = _finish(pts, visible(drv_lm))
    return clip_to_frame(result, frame) if frame is not None else result
