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

from dataclasses import dataclass

import albumentations as A
import cv2
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

    def __post_init__(self) -> None:
        for name in ("flip_p", "affine_p"):
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
        self.perm = np.asarray(flip_perm)
        self.transform = A.Compose(
            [
                A.HorizontalFlip(p=cfg.flip_p),
                A.Affine(scale=cfg.scale, translate_percent=(-cfg.translate, cfg.translate),
                         rotate=(-cfg.rotate, cfg.rotate), p=cfg.affine_p,
                         border_mode=cv2.BORDER_CONSTANT, fill=0),
            ],
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            seed=seed,
            save_applied_params=True,
        )
        affine = self.transform.transforms[1]
        self.border_value = fgeometric.extend_value(affine.fill, 3)
        if affine.fit_output:
            raise ValueError("Augmenter keeps the frame: Affine(fit_output=True) is not supported")

    def __call__(self, rgb: np.ndarray, keypoints: np.ndarray, face_box: np.ndarray, face_valid: bool) -> Augmented:
        h, w = rgb.shape[:2]
        kp = np.asarray(keypoints, np.float32)
        k = len(kp)
        x0, y0, x1, y1 = (float(v) for v in face_box)
        points = np.empty((k + 4, 2), np.float32)
        points[:k] = kp
        points[k:] = ((x0, y0), (x1, y0), (x0, y1), (x1, y1))
        image, moved, flipped = self.move(rgb, points)
        new_kp, new_corners = moved[:k], moved[k:]
        x, y = new_kp[:, 0], new_kp[:, 1]
        lost = (kp[:, 0] == MISSING) | (kp[:, 1] == MISSING) | (x < 0) | (y < 0) | (x > w - 1) | (y > h - 1)
        new_kp[lost] = MISSING
        if flipped:
            new_kp = new_kp[self.perm]
        box, valid = _ZERO_BOX, False
        if face_valid:
            (bx0, by0), (bx1, by1) = new_corners.min(axis=0).tolist(), new_corners.max(axis=0).tolist()
            area = max(bx1 - bx0, 0.0) * max(by1 - by0, 0.0)
            cx0, cy0, cx1, cy1 = max(bx0, 0.0), max(by0, 0.0), min(bx1, float(w)), min(by1, float(h))
            inside = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0)
            if area > 0 and inside >= MIN_INSIDE * area:
                box, valid = np.array([cx0, cy0, cx1, cy1], np.float32), True
        return Augmented(image, np.ascontiguousarray(new_kp), box.copy() if box is _ZERO_BOX else box, valid,
                         flipped)

    def move(self, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """One draw of ``self.transform`` applied to an image and float32 (x, y) points.

        Consumes the shared generator exactly as ``self.transform(image=…, keypoints=…)``
        does (the Compose's own p, then each transform's p, then the affine's
        parameters) and computes what its targets compute: ``hflip`` / ``(w-1) - x``,
        then ``cv2.warpAffine`` / ``cv2.transform`` with the drawn matrix. The matrix is
        built once (``Affine.get_params_dependent_on_data`` also builds the bounding-box
        one, unused here) and the identity test is ``np.allclose``'s without its overhead.
        """
        flip, affine = self.transform.transforms
        self.transform.py_random.random()  # Compose.__call__ draws its own p (1.0) first
        h, w = rgb.shape[:2]
        image, pts = rgb, np.array(points, np.float32)
        flipped = flip.should_apply()
        if flipped:
            image = cv2.flip(image, 1)
            pts[:, 0] = (w - 1) - pts[:, 0]
        if affine.should_apply():
            matrix = _affine_matrix(affine, (h, w))
            if not _is_identity(matrix):  # albumentations returns the input then
                image = cv2.warpAffine(image, matrix[:2, :], (w, h), flags=affine.interpolation,
                                       borderMode=affine.border_mode, borderValue=self.border_value)
                pts = cv2.transform(pts.reshape(-1, 1, 2), matrix[:2]).reshape(-1, 2)
        return np.ascontiguousarray(image), pts, flipped


_ZERO_BOX = np.zeros(4, np.float32)
_EYE = np.eye(3)
_IDENTITY_TOLERANCE = 1e-8 + 1e-5 * _EYE  # np.allclose's atol + rtol·|identity|


def _is_identity(matrix: np.ndarray) -> bool:
    return bool((np.abs(matrix - _EYE) <= _IDENTITY_TOLERANCE).all())


def _affine_matrix(affine: A.Affine, shape: tuple[int, int]) -> np.ndarray:
    """``affine.get_params_dependent_on_data(...)["matrix"]``: the same draws, in the same order."""
    translate = affine._get_translate_params(shape)
    shear = affine._get_shear_params()
    scale = affine._get_scale(affine.scale, affine.keep_ratio, affine.balanced_scale, affine.py_random)
    rotate = affine.py_random.uniform(*affine.rotate)
    return fgeometric.create_affine_transformation_matrix(translate, shear, scale, rotate,
                                                          fgeometric.center(shape))
