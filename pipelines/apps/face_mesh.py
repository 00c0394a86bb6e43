"""68 iBUG landmarks of a face photo: MediaPipe Face Mesh (the pose extra) mapped onto the 68 points.

mediapipe 0.10.21 carries its face-mesh model inside its wheel, so this runs offline (installed
in .venv-pose: ``make setup-pose``).  Face Mesh gives 468 surface points; each iBUG
point is one of them, or the mean of two where the iBUG point lies between mesh vertices
(:data:`IBUG_FROM_MESH`, documented in docs/portrait.md).  "Right" is the subject's right, as in
both schemes, so no left/right swap is needed: mesh point 33 (the subject's right eye, outer
corner) is iBUG 36.

The mapping, by region (mesh indices; ``a+b`` = mean of two)::

    jaw 0-16        127 234 93 132+58 58+172 136 150 176 152 400 379 365 397+288 361 323 454 356
    right brow      70 63 105 66 107                   left brow   336 296 334 293 300
    nose bridge     168+6 197+195 5 4                  lower nose  75 97 2 326 305
    right eye       33 160 158 133 153 144             left eye    362 385 387 263 373 380
    outer lips      61 40 37 0 267 270 291 321 314 17 84 91
    inner lips      78 81 13 311 308 402 14 178

Mesh points lie on the face surface, so the jaw points follow the visible face contour (as
68-point annotators place them); under strong yaw the far contour is where the mesh puts it.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

from datasets.pose.landmarks import NUM_LANDMARKS, REGIONS
from pipelines.apps.pose_extract import INSTALL_HINT, PoseExtraMissing

IBUG_FROM_MESH: tuple[tuple[int, ...], ...] = (
    # jaw 0-16: image-left ear level, round the chin (152), to image-right
    (127,),
    (234,),
    (93,),
    (132, 58),
    (58, 172),
    (136,),
    (150,),
    (176,),
    (152,),
    (400,),
    (379,),
    (365,),
    (397, 288),
    (361,),
    (323,),
    (454,),
    (356,),
    # right brow 17-21 (outer -> inner), left brow 22-26 (inner -> outer)
    (70,),
    (63,),
    (105,),
    (66,),
    (107,),
    (336,),
    (296,),
    (334,),
    (293,),
    (300,),
    # nose bridge 27-30 (between the eyes -> tip), lower nose 31-35 (image-left ala -> subnasale -> right)
    (168, 6),
    (197, 195),
    (5,),
    (4,),
    (75,),
    (97,),
    (2,),
    (326,),
    (305,),
    # right eye 36-41: outer corner, upper lid, inner corner, lower lid
    (33,),
    (160,),
    (158,),
    (133,),
    (153,),
    (144,),
    # left eye 42-47: inner corner, upper lid, outer corner, lower lid
    (362,),
    (385,),
    (387,),
    (263,),
    (373,),
    (380,),
    # outer lips 48-59: right corner, upper lip (0 = top centre), left corner, lower lip (17 = bottom centre)
    (61,),
    (40,),
    (37,),
    (0,),
    (267,),
    (270,),
    (291,),
    (321,),
    (314,),
    (17,),
    (84,),
    (91,),
    # inner lips 60-67: right corner, upper (13 = centre), left corner, lower (14 = centre)
    (78,),
    (81,),
    (13,),
    (311,),
    (308,),
    (402,),
    (14,),
    (178,),
)
assert len(IBUG_FROM_MESH) == NUM_LANDMARKS
assert REGIONS["inner_lips"] == (60, 67)
MESH_POINTS = 468


class NoFaceFound(ValueError):
    """The face mesh found no face in the image."""


def mesh_to_ibug(mesh: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[468, 2+] Face Mesh points (x, y normalised to [0, 1]) -> iBUG-68 [68, 2] pixel (x, y)
    for an image of ``size`` (H, W); points outside the image are missing (-1)."""
    pts = np.asarray(mesh, np.float64)
    if pts.ndim != 2 or pts.shape[0] < MESH_POINTS or pts.shape[1] < 2:
        raise ValueError(f"expected Face Mesh points [468, 2 or 3], got {pts.shape}")
    h, w = size
    xy = pts[:, :2] * [w, h] - 0.5  # normalised image coordinates -> pixel centres
    out = np.stack([xy[list(idx)].mean(axis=0) for idx in IBUG_FROM_MESH]).astype(np.float32)
    outside = (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 0] > w - 1) | (out[:, 1] > h - 1)
    out[outside] = -1
    return out


def _import_face_mesh():
    try:
        os.environ.setdefault("GLOG_minloglevel", "2")  # its C++ logging is noise on a CLI
        with contextlib.redirect_stdout(io.StringIO()):
            import mediapipe  # noqa: F401
            from mediapipe.python.solutions import face_mesh
    except ImportError as exc:
        raise PoseExtraMissing(
            f"landmarks from a photo (--landmarks auto) need the pose extra (mediapipe): {INSTALL_HINT}"
        ) from exc
    return face_mesh


def extract_landmarks(image: np.ndarray) -> np.ndarray:
    """iBUG-68 landmarks [68, 2] (x, y pixels, -1 missing) of the largest face in an RGB uint8 image.

    Raises :class:`NoFaceFound` when the mesh finds no face, :class:`PoseExtraMissing` when
    mediapipe is not installed.
    """
    img = np.ascontiguousarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
    face_mesh = _import_face_mesh()
    with face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
    ) as mesh:
        result = mesh.process(img)
    if not result.multi_face_landmarks:
        raise NoFaceFound("no face found in the image (MediaPipe Face Mesh)")
    pts = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark])
    lm = mesh_to_ibug(pts, (img.shape[0], img.shape[1]))
    if int((lm[:, 0] >= 0).sum()) < 20:
        raise NoFaceFound("the face found is mostly outside the image (fewer than 20 of 68 landmarks inside)")
    return lm
