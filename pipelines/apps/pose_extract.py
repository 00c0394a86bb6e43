"""Body keypoints from a photo: MediaPipe Pose (the pose extra) mapped onto OpenPose-18.

mediapipe 0.10.21 carries its pose model inside its wheel, so this runs offline.  It lives in
an environment of its own, .venv-pose (``make setup-pose``, requirements/pose.lock), since its
declared dependencies cannot share the core one; when it is missing, :func:`extract_keypoints` raises :class:`PoseExtraMissing` naming the
extra instead of an ImportError from deep inside.

mediapipe 0.10.21's C++ bindings turn result protos into Python classes through
``MessageFactory().GetPrototype``, which protobuf 5 removed (its replacement is
``message_factory.GetMessageClass``); with the protobuf 6 every other package here needs, each
process printed ``AttributeError: 'MessageFactory' object has no attribute 'GetPrototype'``.
:func:`protobuf_compat` gives the factory that method back (the same class lookup), which stops
the message where it starts; no protobuf satisfies both mediapipe's ``<5`` and the ``>=6.33.5`` of
googleapis-common-protos / opentelemetry-proto (mlflow's). The model's own C++ log lines
(TensorFlow Lite delegate, feedback manager) are written straight to file descriptor 2, so
:func:`quiet_native_stderr` holds them back and logs them at debug level.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from datasets.pose.keypoints import MISSING, NUM_JOINTS

# OpenPose-18 joint -> MediaPipe Pose landmark (33-point BlazePose topology). The neck has no
# MediaPipe landmark: it is the midpoint of the shoulders, as OpenPose places it.
_MP_NOSE, _MP_LEYE, _MP_REYE, _MP_LEAR, _MP_REAR = 0, 2, 5, 7, 8
_MP_LSHO, _MP_RSHO, _MP_LELB, _MP_RELB, _MP_LWRI, _MP_RWRI = 11, 12, 13, 14, 15, 16
_MP_LHIP, _MP_RHIP, _MP_LKNE, _MP_RKNE, _MP_LANK, _MP_RANK = 23, 24, 25, 26, 27, 28
OPENPOSE_FROM_MEDIAPIPE: tuple[int | None, ...] = (
    _MP_NOSE,
    None,
    _MP_RSHO,
    _MP_RELB,
    _MP_RWRI,
    _MP_LSHO,
    _MP_LELB,
    _MP_LWRI,
    _MP_RHIP,
    _MP_RKNE,
    _MP_RANK,
    _MP_LHIP,
    _MP_LKNE,
    _MP_LANK,
    _MP_LEYE,
    _MP_REYE,
    _MP_LEAR,
    _MP_REAR,
)
_NECK = 1
MIN_VISIBILITY = 0.5  # MediaPipe's own default threshold for drawing a landmark
# The landmarks every photo of a person shows (nose, eyes, ears, shoulders): their mean visibility
# is the detection's confidence (the legacy Pose solution reports no detector score of its own).
_CORE = (_MP_NOSE, _MP_LEYE, _MP_REYE, _MP_LEAR, _MP_REAR, _MP_LSHO, _MP_RSHO)

log = logging.getLogger(__name__)

INSTALL_HINT = "`make setup-pose`, then run with .venv-pose/bin/python (the pose extra's environment, requirements/pose.lock)"


class PoseExtraMissing(RuntimeError):
    """The optional pose extra (mediapipe) is not installed."""


class NoPersonFound(ValueError):
    """The pose model found no person in the image."""


def mediapipe_to_openpose(
    landmarks: np.ndarray, size: tuple[int, int], min_visibility: float = MIN_VISIBILITY
) -> np.ndarray:
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


def protobuf_compat() -> None:
    """Give protobuf >= 5's MessageFactory the ``GetPrototype`` mediapipe's bindings call."""
    from google.protobuf import message_factory

    if not hasattr(message_factory.MessageFactory, "GetPrototype"):

        def get_prototype(self, descriptor):  # the lookup protobuf 4 did under this name
            return message_factory.GetMessageClass(descriptor)

        message_factory.MessageFactory.GetPrototype = get_prototype


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what C++ code writes to file descriptor 2 while the block runs; log it at debug."""
    try:
        fd = os.dup(2)
    except OSError:  # no stderr to redirect (a detached process)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            import sys

            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
            sink.seek(0)
            held = sink.read().decode("utf-8", "replace").strip()
            if held:
                log.debug("mediapipe: %s", held)


def _import_mediapipe():
    try:
        os.environ.setdefault("GLOG_minloglevel", "2")
        protobuf_compat()
        with contextlib.redirect_stdout(io.StringIO()), quiet_native_stderr():
            import mediapipe  # noqa: F401
            from mediapipe.python.solutions import pose as mp_pose
    except ImportError as exc:
        raise PoseExtraMissing(
            f"keypoints from a photo need the pose extra (mediapipe): {INSTALL_HINT}"
        ) from exc
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
    lm = _landmarks(img)
    if lm is None:
        raise NoPersonFound("no person found in the image")
    kp = mediapipe_to_openpose(lm, (img.shape[0], img.shape[1]), min_visibility)
    if int(((kp != MISSING).all(axis=1)).sum()) < 2:
        raise NoPersonFound("no person found in the image (fewer than two body joints visible)")
    return kp


def _landmarks(img: np.ndarray, min_detection_confidence: float = 0.5) -> np.ndarray | None:
    """[33, 3] (x, y normalised, visibility) of the one person MediaPipe Pose finds, or None."""
    mp_pose = _import_mediapipe()
    with (
        quiet_native_stderr(),
        mp_pose.Pose(
            static_image_mode=True,
            model_complexity=1,
            enable_segmentation=False,
            min_detection_confidence=min_detection_confidence,
        ) as pose,
    ):
        result = pose.process(img)
    if result.pose_landmarks is None:
        return None
    return np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark])


@dataclass(frozen=True)
class PersonFound:
    keypoints: np.ndarray  # OpenPose-18 [18, 2] pixels, -1 missing
    confidence: float  # mean visibility of nose, eyes, ears and shoulders, 0..1
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: the landmarks' extent in pixels, clipped


def detect_people(
    image: np.ndarray,
    max_people: int = 2,
    min_detection_confidence: float = 0.5,
    min_visibility: float = MIN_VISIBILITY,
) -> list[PersonFound]:
    """Up to ``max_people`` people in an RGB uint8 image, most prominent first.

    MediaPipe Pose returns one person per image, so each person found is painted over with the
    image's median colour (their landmark box, grown by 15%) and the image searched again: a second
    detection means a second person.  Enough to tell a catalogue photo of one person from a group.
    """
    img = np.ascontiguousarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    found: list[PersonFound] = []
    work = img.copy()
    fill = np.median(img.reshape(-1, 3), axis=0).astype(np.uint8)
    while len(found) < max_people:
        lm = _landmarks(work, min_detection_confidence)
        if lm is None:
            break
        kp = mediapipe_to_openpose(lm, (h, w), min_visibility)
        xs, ys = lm[:, 0] * w, lm[:, 1] * h
        grow_x, grow_y = 0.15 * (xs.max() - xs.min()), 0.15 * (ys.max() - ys.min())
        x0, x1 = int(max(0, xs.min() - grow_x)), int(min(w, xs.max() + grow_x + 1))
        y0, y1 = int(max(0, ys.min() - grow_y)), int(min(h, ys.max() + grow_y + 1))
        found.append(PersonFound(kp, float(np.mean(lm[list(_CORE), 2])), (x0, y0, x1, y1)))
        if x1 <= x0 or y1 <= y0:
            break
        work[y0:y1, x0:x1] = fill
    return found
