"""The portrait renderer's true edits: a source re-rendered with a landmark edit as a renderer parameter.

Every semantic edit of the landmark edit model (:mod:`datasets.faces.edits`) is also a parameter of
the renderer, so the right answer to an edit request exists.  For a source view, :func:`true_edits`
renders, per edit of :data:`TRUE_EDITS`, the same identity with the edit applied:

- expression edits (``mouth_open``, ``smile``, ``eyes_closed``, ``brows``) to the frontal landmarks
  the renderer draws the features through (pose and everything else kept);
- ``rotate`` as the head's roll, the head turned about the same face centre the landmark edit turns
  about;
- ``shift`` as the head's position.

Each comes with the *requested* landmarks (the landmark edit applied to the source's landmarks, which
is what an editor asks a generator for) and the *rendered* ones (the true image's own landmarks).
The writer stores them for the test views as ``<root>/groundtruth/test/<stem>.edits.npz``
(:func:`encode`; fixed zip timestamps, so equal renders give equal bytes), and preprocess carries
them into the test shards as ``vN.edits.npz``.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.faces import edits as face_edits
from datasets.synthetic.groundtruth import FOLDER, npz_bytes
from datasets.synthetic.portrait_geometry import HeadPose

SUFFIX = ".edits.npz"
EXPRESSION_EDITS = ("mouth_open", "smile", "eyes_closed", "brows")
# (name, strength, second component): shift is (dx, dy) in fractions of the frame (W, H).
TRUE_EDITS: tuple[tuple[str, float, float], ...] = (
    ("rotate", 20.0, 0.0),
    ("mouth_open", 0.8, 0.0),
    ("smile", 1.0, 0.0),
    ("eyes_closed", 1.0, 0.0),
    ("brows", 0.8, 0.0),
    ("shift", 0.1, 0.05),
)


@dataclass(frozen=True)
class TrueEdits:
    """One source's true edits, in :data:`TRUE_EDITS` order."""

    names: tuple[str, ...]
    values: np.ndarray  # float32 [E, 2]: strength (shift: dx, dy pixels)
    images: np.ndarray  # uint8 [E, H, W, 3]
    requested: np.ndarray  # float32 [E, 68, 2]: the landmark edit of the source's landmarks
    rendered: np.ndarray  # float32 [E, 68, 2]: the true image's landmarks

    def index(self, name: str) -> int:
        return self.names.index(name)


def path_for(root: str | Path, split: str, image_name: str) -> Path:
    """``<root>/groundtruth/<split>/<image stem>.edits.npz``."""
    return Path(root) / FOLDER / split / (Path(image_name).stem + SUFFIX)


def edit_values(name: str, strength: float, second: float, size: tuple[int, int]) -> tuple[float, float]:
    """The edit's parameters as the landmark edit takes them (shift in pixels of an (H, W) frame)."""
    if name == "shift":
        return strength * size[1], second * size[0]
    return strength, 0.0


def requested_landmarks(
    landmarks: np.ndarray, name: str, values: tuple[float, float], size: tuple[int, int]
) -> np.ndarray:
    """The landmark edit ``name`` of ``landmarks`` [68, 2], clipped to the frame (-1 outside)."""
    lm = np.asarray(landmarks, np.float32)
    if name == "rotate":
        out = face_edits.rotate(lm, values[0])
    elif name == "shift":
        out = face_edits.shift(lm, values[0], values[1], size)
    else:
        out = getattr(face_edits, name)(lm, values[0])
    return face_edits.clip_to_frame(out, size).astype(np.float32)


def rotated_pose(pose: HeadPose, centre: np.ndarray, degrees: float) -> HeadPose:
    """``pose`` turned on screen by ``degrees`` (counter-clockwise) about image point ``centre``,
    the turn :func:`datasets.faces.edits.rotate` applies to landmarks."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    dx, dy = pose.cx - centre[0], pose.cy - centre[1]
    return HeadPose(
        float(centre[0] + c * dx + s * dy),
        float(centre[1] - s * dx + c * dy),
        pose.scale,
        pose.roll_deg + degrees,
        pose.yaw_deg,
    )


def shifted_pose(pose: HeadPose, dx: float, dy: float) -> HeadPose:
    return HeadPose(pose.cx + dx, pose.cy + dy, pose.scale, pose.roll_deg, pose.yaw_deg)


def encode(edits: TrueEdits) -> bytes:
    """npz bytes (deflated, fixed timestamps)."""
    arrays = {
        "names": np.array(edits.names, dtype="<U16"),
        "values": edits.values.astype(np.float32),
        "images": edits.images.astype(np.uint8),
        "requested": edits.requested.astype(np.float32),
        "rendered": edits.rendered.astype(np.float32),
    }
    return npz_bytes(arrays)


def decode(data: bytes | memoryview) -> TrueEdits:
    """Inverse of :func:`encode`; raises ValueError on anything else."""
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
            names = tuple(str(n) for n in z["names"])
            values, images = z["values"], z["images"]
            requested, rendered = z["requested"], z["rendered"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a true-edits file ({exc})") from None
    e = len(names)
    if (
        values.shape != (e, 2)
        or images.shape[:1] != (e,)
        or requested.shape != (e, 68, 2)
        or rendered.shape != (e, 68, 2)
    ):
        raise ValueError(
            f"true-edits arrays disagree: {e} names, values {values.shape}, images {images.shape}, "
            f"requested {requested.shape}, rendered {rendered.shape}"
        )
    return TrueEdits(names, values, images, requested, rendered)
