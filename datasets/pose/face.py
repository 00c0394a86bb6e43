"""Face boxes from head keypoints, and the face crops the paper's face loss compares.

The rule (deterministic, no detector; pixels of the working frame):

1. Head points = the visible ones among nose, Reye, Leye, Rear, Lear.
   None visible -> no face.
2. Size: ``side = max(SPREAD_SCALE · spread, NECK_SCALE · |nose − neck|)``, where
   ``spread`` is the largest distance between two head points (ear to ear is
   about the face width) and the neck term applies when nose and neck are both
   visible (it sizes frontal faces whose ears are hidden).
   ``side < MIN_SIDE_FRACTION · H`` -> no face (one lone head point, no neck).
3. Box = the square of that side centred on the mean of the head points,
   clipped to the image.  If less than ``MIN_INSIDE`` of the square lies in
   the image -> no face.

A missing face is *flagged* (``valid = False``, box zeros, crop black), never a
reason to drop the image: the loss simply skips it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.pose.keypoints import JOINT_INDEX, MISSING

HEAD_JOINTS: tuple[int, ...] = tuple(JOINT_INDEX[n] for n in ("nose", "Reye", "Leye", "Rear", "Lear"))
NOSE, NECK = JOINT_INDEX["nose"], JOINT_INDEX["neck"]
SPREAD_SCALE = 1.3
NECK_SCALE = 0.9
MIN_SIDE_FRACTION = 0.04
MIN_INSIDE = 0.5


@dataclass(frozen=True)
class FaceBox:
    """(x0, y0, x1, y1) in pixels of the working frame; zeros when ``valid`` is False."""

    box: tuple[float, float, float, float]
    valid: bool
    reason: str = ""  # why there is no face, for the manifest's counts


NO_FACE_BOX = (0.0, 0.0, 0.0, 0.0)


def body_face_box(keypoints: np.ndarray, image_size: tuple[int, int]) -> FaceBox:
    """Apply the rule above to OpenPose-18 keypoints (x, y), -1 missing."""
    h, w = image_size
    kp = np.asarray(keypoints, np.float64)
    vis = (kp[:, 0] != MISSING) & (kp[:, 1] != MISSING)
    head = kp[[j for j in HEAD_JOINTS if vis[j]]]
    if len(head) == 0:
        return FaceBox(NO_FACE_BOX, False, "no head keypoint")
    spread = float(np.max(np.linalg.norm(head[:, None] - head[None], axis=-1))) if len(head) > 1 else 0.0
    neck = float(np.linalg.norm(kp[NOSE] - kp[NECK])) if vis[NOSE] and vis[NECK] else 0.0
    side = max(SPREAD_SCALE * spread, NECK_SCALE * neck)
    if side < MIN_SIDE_FRACTION * h:
        return FaceBox(NO_FACE_BOX, False, "head keypoints too close to size a face")
    cx, cy = head.mean(axis=0)
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    inside = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0)
    if inside < MIN_INSIDE * side * side:
        return FaceBox(NO_FACE_BOX, False, "face mostly outside the image")
    return FaceBox((round(cx0, 2), round(cy0, 2), round(cx1, 2), round(cy1, 2)), True)


def crop_face(
    image: np.ndarray, box: FaceBox | tuple[float, float, float, float], size: int, valid: bool | None = None
) -> np.ndarray:
    """The ``size``×``size`` crop of ``box`` from an H×W×3 uint8 image; black when invalid."""
    if isinstance(box, FaceBox):
        valid, coords = box.valid, box.box
    else:
        coords = box
        valid = bool(valid) if valid is not None else True
    if not valid:
        return np.zeros((size, size, 3), np.uint8)
    h, w = image.shape[:2]
    x0, y0 = int(np.floor(coords[0])), int(np.floor(coords[1]))
    x1, y1 = int(np.ceil(coords[2])), int(np.ceil(coords[3]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    patch = image[y0:y1, x0:x1]
    shrink = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
