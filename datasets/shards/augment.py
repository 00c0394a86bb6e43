"""Train-time augmentation: one albumentations geometric transform per image, applied
consistently to the image, its keypoints, its pose heatmaps and its face box.

* albumentations draws the flip and the affine parameters and builds the matrix;
  the image is warped with that matrix (cv2.warpAffine, albumentations' own call)
  and the keypoints moved with it (the face box travels as its four corners,
  appended to the keypoints, and comes back as their bounding box).  The
  transforms are driven directly rather than through ``A.Compose``, whose
  per-call bookkeeping (keypoint format conversion, checks, parameter records)
  cost ~3× the warp itself at 128×88; the draws, the warped pixels and the moved
  keypoints are bit-for-bit those of the ``Compose`` (tested);
* a horizontal flip is read back from ``applied_transforms`` and the left/right
  keypoints are swapped (albumentations does not know which joint is which);
* pose heatmaps are never warped: they are rendered afterwards from the
  transformed keypoints (on the training device for training).  For the
  flips, shifts and rotations used here that equals warping the stored maps
  (the Gaussian is isotropic) while costing ~60 µs instead of warping K
  channels; under scaling σ stays in pixels, which is the definition the
  stored maps use too.  Channels swap on a flip because the keypoints do.
* joints pushed out of the frame become missing (-1), like unannotated ones.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import albumentations as A
import cv2
import numba
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric

from datasets.pose.face import MIN_INSIDE
from datasets.pose.keypoints import MISSING


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric augmentation of training images (probabilities per image)."""

    flip_p: float = 0.5
    affine_p: float = 0.5
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05  # fraction of the image size, each direction
    rotate: float = 8.0  # degrees, each direction
    # Share of training pairs whose target is the source view itself (train.same_view_pairs): half
    # of them the identical image, the other half the view moved by its own draw (an exact rigid
    # move). A portrait edit changes a few percent of the pixels; a model that has only seen pairs
    # of different head poses and expressions never learns to leave the rest alone.
    same_view_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flip_p", "affine_p", "same_view_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class Augmented:
    rgb: np.ndarray  # uint8 H×W×3
    keypoints: np.ndarray  # float32 [K, 2], -1 missing
    face_box: np.ndarray  # float32 [4]
    face_valid: bool
    flipped: bool


class Augmenter:
    """Callable applying :class:`AugmentConfig` to one image; seeded, so reproducible per worker."""

    def __init__(self, cfg: AugmentConfig, flip_perm: np.ndarray, seed: int) -> None:
        self.cfg = cfg
        self.perm = np.asarray(flip_perm, np.int64)
        self.transform = A.Compose(
            [
                A.HorizontalFlip(p=cfg.flip_p),
                A.Affine(
                    scale=cfg.scale,
                    translate_percent=(-cfg.translate, cfg.translate),
                    rotate=(-cfg.rotate, cfg.rotate),
                    p=cfg.affine_p,
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                ),
            ],
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            seed=seed,
            save_applied_params=True,
        )
        # Its own generator, so that same_view_p = 0 leaves every image draw as it was.
        self.pair_rng = random.Random(seed * 2 + 1)
        affine = self.transform.transforms[1]
        self.border_value = fgeometric.extend_value(affine.fill, 3)
        if affine.fit_output:
            raise ValueError("Augmenter keeps the frame: Affine(fit_output=True) is not supported")

    def same_view(self) -> tuple[bool, bool]:
        """Whether the next pair's target is its source view, and if so whether the identical image."""
        if self.cfg.same_view_p <= 0.0 or self.pair_rng.random() >= self.cfg.same_view_p:
            return False, False
        return True, self.pair_rng.random() < 0.5

    def __call__(
        self, rgb: np.ndarray, keypoints: np.ndarray, face_box: np.ndarray, face_valid: bool
    ) -> Augmented:
        h, w = rgb.shape[:2]
        image, matrix, flipped = self.draw_and_warp(rgb)
        kp, box, valid = _move_points(
            np.asarray(keypoints, np.float32),
            np.asarray(face_box, np.float32),
            matrix,
            flipped,
            w,
            h,
            self.perm,
            bool(face_valid),
            MIN_INSIDE,
        )
        return Augmented(image, kp, box, bool(valid), flipped)

    def draw_and_warp(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """One draw of ``self.transform``: the moved image, the affine part's matrix (float64 2×3,
        identity where none applies; points are flipped first, then moved by it) and the flip.

        Consumes the shared generator exactly as ``self.transform(image=…, keypoints=…)``
        does (the Compose's own p, then each transform's p, then the affine's
        parameters) and warps as its image target does: ``hflip``, then ``cv2.warpAffine``
        with the drawn matrix, skipped where albumentations finds it the identity.
        """
        flip, affine = self.transform.transforms
        self.transform.py_random.random()  # Compose.__call__ draws its own p (1.0) first
        h, w = rgb.shape[:2]
        image = rgb
        flipped = _applies(flip.p, flip.py_random)  # each transform has a generator of its own
        if flipped:
            image = cv2.flip(image, 1)
        matrix = _IDENTITY_2x3
        if _applies(affine.p, affine.py_random):
            m = _affine_matrix(affine, (h, w))
            if not _is_identity(m):  # albumentations returns the input then
                matrix = np.array(m)
                image = cv2.warpAffine(
                    image,
                    matrix,
                    (w, h),
                    flags=affine.interpolation,
                    borderMode=affine.border_mode,
                    borderValue=self.border_value,
                )
        return image, matrix, flipped

    def move(self, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """The image and float32 (x, y) points after one draw (the Compose's image and keypoints)."""
        w = rgb.shape[1]
        image, matrix, flipped = self.draw_and_warp(rgb)
        moved = _transform_points(np.asarray(points, np.float32), matrix, flipped, w)
        return np.ascontiguousarray(image), moved, flipped


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the keypoint kernel in this process: loader workers
    forked afterwards inherit it instead of each loading it again (~2 s of CPU apiece, measured)."""
    _move_points(
        np.zeros((1, 2), np.float32),
        np.zeros(4, np.float32),
        _IDENTITY_2x3,
        False,
        2,
        2,
        np.zeros(1, np.int64),
        True,
        MIN_INSIDE,
    )


_IDENTITY_2x3 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
_IDENTITY_TOLERANCE = 1e-8 + 1e-5  # np.allclose's atol + rtol·|1| (its test against the identity)


def _applies(p: float, rng: random.Random) -> bool:
    """``BasicTransform.should_apply()``: no draw at p <= 0 or p >= 1."""
    if p <= 0.0:
        return False
    return p >= 1.0 or rng.random() < p


def _is_identity(m: tuple[tuple[float, float, float], tuple[float, float, float]]) -> bool:
    (a, b, c), (d, e, f) = m
    t = _IDENTITY_TOLERANCE
    return abs(a - 1) <= t and abs(e - 1) <= t and max(abs(b), abs(c), abs(d), abs(f)) <= 1e-8


def _affine_matrix(
    affine: A.Affine, shape: tuple[int, int]
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``affine.get_params_dependent_on_data(...)["matrix"][:2]``: the same draws, in the same order.

    The draws are Affine's own (``_get_translate_params``, ``_get_shear_params``,
    ``_get_scale``, the rotation), made directly from its generator where its ranges are
    plain (percent translation, no balanced scale); the product ``shift_back · translate ·
    shear · rotate · scale · shift`` is written out in closed form: albumentations builds six
    3×3 arrays and multiplies them, ~40 µs a call here, as much as the warp it feeds. Equal
    to its matrix to 1e-12, leaving the generator in the same state (tested).
    """
    h, w = shape
    rng = affine.py_random
    if affine.translate_px is None and affine.translate_percent is not None and not affine.balanced_scale:
        tp, sh, sc = affine.translate_percent, affine.shear, affine.scale
        tx, ty = int(rng.uniform(*tp["x"]) * w), int(rng.uniform(*tp["y"]) * h)
        hx_deg, hy_deg = -rng.uniform(*sh["x"]), -rng.uniform(*sh["y"])
        sx = float(sc["x"]) if isinstance(sc["x"], (int, float)) else rng.uniform(*sc["x"])
        sy = float(sc["y"]) if isinstance(sc["y"], (int, float)) else rng.uniform(*sc["y"])
        if affine.keep_ratio:
            sy = sx
    else:
        translate = affine._get_translate_params(shape)
        shear = affine._get_shear_params()
        scale = affine._get_scale(affine.scale, affine.keep_ratio, affine.balanced_scale, rng)
        tx, ty, hx_deg, hy_deg, sx, sy = (
            translate["x"],
            translate["y"],
            shear["x"],
            shear["y"],
            scale["x"],
            scale["y"],
        )
    rotate = rng.uniform(*affine.rotate)
    cx, cy = w / 2 - 0.5, h / 2 - 0.5  # fgeometric.center
    r = math.radians(rotate % 360)
    c, s = math.cos(r), math.sin(r)
    hx, hy = math.tan(math.radians(hx_deg)), math.tan(math.radians(hy_deg))
    # shear · rotate · scale (the linear part), then the shifts around the centre and the translation
    a, b = c * sx - hx * s * sx, s * sy + hx * c * sy
    d, e = hy * c * sx - s * sx, hy * s * sy + c * sy
    return (a, b, tx + cx - (a * cx + b * cy)), (d, e, ty + cy - (d * cx + e * cy))


def _transform_points(points: np.ndarray, matrix: np.ndarray, flipped: bool, w: int) -> np.ndarray:
    """float32 points flipped (``(w-1) - x``) where ``flipped``, then moved by the 2×3 ``matrix``
    (float64 arithmetic, rounded once to float32)."""
    p = points.astype(np.float64)
    if flipped:
        p[:, 0] = (w - 1) - p[:, 0]
    return (p @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _move_points(
    kp: np.ndarray,
    box: np.ndarray,
    m: np.ndarray,
    flipped: bool,
    w: int,
    h: int,
    perm: np.ndarray,
    face_valid: bool,
    min_inside: float,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Keypoints and face box through the flip and ``m`` (as :func:`_transform_points`): joints
    that leave the frame become missing, left/right swap on a flip; the box is its moved
    corners' bounding box clipped to the frame, valid if ``min_inside`` of it stays inside."""
    k = kp.shape[0]
    moved = np.empty((k, 2), np.float32)
    for i in range(k):
        x, y = np.float64(kp[i, 0]), np.float64(kp[i, 1])
        if kp[i, 0] == MISSING or kp[i, 1] == MISSING:
            moved[i, 0] = moved[i, 1] = MISSING
            continue
        if flipped:
            x = (w - 1) - x
        nx: float | np.float32 = np.float32(m[0, 0] * x + m[0, 1] * y + m[0, 2])  # or MISSING
        ny: float | np.float32 = np.float32(m[1, 0] * x + m[1, 1] * y + m[1, 2])
        if nx < 0 or ny < 0 or nx > w - 1 or ny > h - 1:
            nx = ny = MISSING
        moved[i, 0], moved[i, 1] = nx, ny
    out = moved
    if flipped:
        out = np.empty_like(moved)
        for i in range(k):
            out[i] = moved[perm[i]]
    clipped = np.zeros(4, np.float32)
    if not face_valid:
        return out, clipped, False
    x0, y0, x1, y1 = (np.float64(box[0]), np.float64(box[1]), np.float64(box[2]), np.float64(box[3]))
    if flipped:
        x0, x1 = (w - 1) - x0, (w - 1) - x1
    bx0 = by0 = np.inf
    bx1 = by1 = -np.inf
    for cx, cy in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        px = float(np.float32(m[0, 0] * cx + m[0, 1] * cy + m[0, 2]))
        py = float(np.float32(m[1, 0] * cx + m[1, 1] * cy + m[1, 2]))
        bx0, bx1, by0, by1 = min(bx0, px), max(bx1, px), min(by0, py), max(by1, py)
    area = max(bx1 - bx0, 0.0) * max(by1 - by0, 0.0)
    cx0, cy0, cx1, cy1 = max(bx0, 0.0), max(by0, 0.0), min(bx1, float(w)), min(by1, float(h))
    inside = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0)
    if area > 0 and inside >= min_inside * area:
        clipped[0], clipped[1], clipped[2], clipped[3] = cx0, cy0, cx1, cy1
        return out, clipped, True
    return out, clipped, False
