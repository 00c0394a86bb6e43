"""Body keypoints from a photo: MediaPipe Pose (the pose extra) mapped onto OpenPose-18.

mediapipe 0.10.21 carries its pose model inside its wheel, so this runs offline.  It is
installed by ``make setup`` (or alone by ``make setup-pose``) from requirements-pose.txt;
when it is missing, :func:`extract_keypoints` raises :class:`PoseExtraMissing` naming the
extra instead of an ImportError from deep inside.
"""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from datasets.pose.keypoints import MISSING, NUM_JOINTS

# OpenPose-18 joint -> MediaPipe Pose landmark (33-point BlazePose topology). The neck has no
# MediaPipe landmark: it is the midpoint of the shoulders, as OpenPose places it.
_MP_NOSE, _MP_LEYE, _MP_REYE, _MP_LEAR, _MP_REAR = 0, 2, 5, 7, 8
_MP_LSHO, _MP_RSHO, _MP_LELB, _MP_RELB, _MP_LWRI, _MP_RWRI = 11, 12, 13, 14, 15, 16
_MP_LHIP, _MP_RHIP, _MP_LKNE, _MP_RKNE, _MP_LANK, _MP_RANK = 23, 24, 25, 26, 27, 28
OPENPOSE_FROM_MEDIAPIPE: tuple[int | None, ...] = (
    _MP_NOSE, None, _MP_RSHO, _MP_RELB, _MP_RWRI, _MP_LSHO, _MP_LELB, _MP_LWRI,
    _MP_RHIP, _MP_RKNE, _MP_RANK, _MP_LHIP, _MP_LKNE, _MP_LANK, _MP_LEYE, _MP_REYE, _MP_LEAR, _MP_REAR,
)
_NECK = 1
MIN_VISIBILITY = 0.5  # MediaPipe's own default threshold for drawing a landmark

INSTALL_HINT = "install the pose extra: `make setup-pose` (pip install --no-deps -r requirements-pose.txt -c constraints.txt)"


class PoseExtraMissing(RuntimeError):
    """The optional pose extra (mediapipe) is not installed."""


class NoPersonFound(ValueError):
    """The pose model found no person in the image."""


def mediapipe_to_openpose(landmarks: np.ndarray, size: tuple[int, int], min_visibility: float = MIN_VISIBILITY) -> np.ndarray:
    """[33, 3] MediaPipe landmarks (x, y normalised to [0, 1], visibility) -> OpenPose-18 [18, 2]
    pixel (x, y) for an image of ``size`` (H, W); joints below ``min_visibility`` or outside the
    image are missing (-1)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (33, 3):
        raise ValueError(f"expected MediaPipe landmarks [33, 3], got {lm.shape}")
    h, w = size
    out = np.full((NUM_JOINTS, 2), float(MISSING), dtype=np.float32)
    for joint, src in enumerate(OPENPOSE_FROM_MEDIAPIPE):
        if src is None:
            continue
        x, y, vis = lm[src, 0] * w, lm[src, 1] * h, lm[src, 2]
        if vis >= min_visibility and 0 <= x < w and 0 <= y < h:
            out[joint] = (x, y)
    r, l = out[2], out[5]
    if (r != MISSING).all() and (l != MISSING).all():
        out[_NECK] = (r + l) / 2
    return out


def _import_mediapipe():
    try:
        # Its C++ logging writes to stderr at import and first use; keep the CLI's output readable.
        os.environ.setdefault("GLOG_minloglevel", "2")
        with contextlib.redirect_stdout(io.StringIO()):
            import mediapipe  # noqa: F401
            from mediapipe.python.solutions import pose as mp_pose
    except ImportError as exc:
        raise PoseExtraMissing(f"keypoints from a photo need the pose extra (mediapipe): {INSTALL_HINT}") from exc
    return mp_pose


def pose_extra_available() -> bool:
    try:
        _import_mediapipe()
    except PoseExtraMissing:
        return False
    return True


def extract_keypoints(image: np.ndarray, min_visibility: float = MIN_VISIBILITY) -> np.ndarray:
    """OpenPose-18 keypoints [18, 2] (x, y pixels, -1 missing) of the person in an RGB uint8 image.

    Raises :class:`NoPersonFound` when the model finds nobody (or fewer than two joints), and
    :class:`PoseExtraMissing` when mediapipe is not installed.
    """
    img = np.ascontiguousarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
    mp_pose = _import_mediapipe()
    with mp_pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False) as pose:
        result = pose.process(img)
    if result.pose_landmarks is None:
        raise NoPersonFound("no person found in the image")
    lm = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark])
    kp = mediapipe_to_openpose(lm, img.shape[:2], min_visibility)
    if int(((kp != MISSING).all(axis=1)).sum()) < 2:
        raise NoPersonFound("no person found in the image (fewer than two body joints visible)")
    return kp
