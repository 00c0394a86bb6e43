"""What a dataset's "pose" is, chosen by its task: keypoints -> driving maps, flip, face box.

The preprocess stage, the loader, augmentation, evaluation and inference all go through a
:class:`PoseScheme` picked by the dataset's ``task`` (params.yaml ``datasets.<name>.task``,
recorded in the shards' manifest), so bodies and portraits share every stage with no fork:

==============  =======================================  ==========================================
                ``pose`` (bodies)                        ``portrait`` (faces)
==============  =======================================  ==========================================
keypoints       OpenPose-18 (:mod:`datasets.pose.keypoints`)  68 iBUG landmarks (:mod:`datasets.pose.landmarks`)
pose channels   18 Gaussian heatmaps, one per joint      8 part maps (jaw, brows, nose, eyes, lips)
flip            joint pairs swapped                      landmark pairs swapped (so sided parts swap)
face box        head-keypoint rule (:mod:`datasets.pose.face`)  square around the landmarks (central face)
==============  =======================================  ==========================================

Both render to the same stored form, :class:`datasets.pose.heatmaps.SparseHeatmaps` (``HMP1``), so
shards, packing between loader workers and pasting into batches are shared.  A joint heatmap is
a small patch; a part map is a curve across the face, so a portrait channel is stored as one
frame-sized patch at the origin (zlib makes the mostly-zero patch a few hundred bytes; pasting
8 channels at 64×64 costs microseconds).  Values are quantised to uint8 either way, the form
the model is trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from datasets.pose import heatmaps, keypoints, landmarks
from datasets.pose.face import NO_FACE_BOX, FaceBox, body_face_box

TASKS: tuple[str, ...] = ("pose", "portrait")


@dataclass(frozen=True)
class PoseScheme:
    """The keypoint convention of one task and how it becomes the generator's pose input."""

    task: str
    name: str  # recorded in the manifest, e.g. "openpose18-heatmaps"
    num_keypoints: int
    channel_names: tuple[str, ...]
    flip_perm: tuple[int, ...]  # keypoint permutation of a horizontal flip (flipped[i] = original[p[i]])
    _render: Callable[[np.ndarray, tuple[int, int], float], heatmaps.SparseHeatmaps]
    _face: Callable[[np.ndarray, tuple[int, int]], FaceBox]

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def flip_permutation(self) -> np.ndarray:
        return np.asarray(self.flip_perm, np.int64)

    def render(self, kp: np.ndarray, size: tuple[int, int], sigma: float) -> heatmaps.SparseHeatmaps:
        """Quantised pose maps of ``kp`` (x, y; -1 missing) in an ``size`` = (H, W) frame."""
        kp = np.asarray(kp, np.float32)
        if kp.shape != (self.num_keypoints, 2):
            raise ValueError(
                f"{self.name}: expected keypoints of shape ({self.num_keypoints}, 2), got {kp.shape}"
            )
        return self._render(kp, size, sigma)

    def dense(self, kp: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
        """float32 [C, H, W] in [0, 1] exactly as a batch holds them (uint8 levels / 255)."""
        return heatmaps.to_dense(self.render(kp, size, sigma)).astype(np.float32) / np.float32(255.0)

    def face(self, kp: np.ndarray, size: tuple[int, int]) -> FaceBox:
        return self._face(np.asarray(kp, np.float32), size)


def sparse_from_dense(q: np.ndarray, sigma: float) -> heatmaps.SparseHeatmaps:
    """uint8 [C, H, W] -> SparseHeatmaps with one frame-sized patch per non-empty channel."""
    c, h, w = q.shape
    s = max(h, w)
    keep = np.flatnonzero(q.reshape(c, -1).any(axis=1))
    patches = np.zeros((len(keep), s, s), np.uint8)
    patches[:, :h, :w] = q[keep]
    return heatmaps.SparseHeatmaps(
        c, h, w, float(sigma), keep.astype(np.int64), np.zeros((len(keep), 2), np.int64), patches
    )


def _portrait_render(lm: np.ndarray, size: tuple[int, int], sigma: float) -> heatmaps.SparseHeatmaps:
    h, w = size
    return sparse_from_dense(heatmaps.quantise(landmarks.render_part_maps(lm, h, w, sigma)), sigma)


def _portrait_face(lm: np.ndarray, size: tuple[int, int]) -> FaceBox:
    box = landmarks.landmark_face_box(lm, size)
    if box is None:
        return FaceBox(NO_FACE_BOX, False, "fewer than 3 landmarks visible")
    x0, y0, x1, y1 = box
    if x1 - x0 < 2 or y1 - y0 < 2:
        return FaceBox(NO_FACE_BOX, False, "landmarks too close to size a face")
    return FaceBox((round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)), True)


BODY = PoseScheme(
    task="pose",
    name="openpose18-heatmaps",
    num_keypoints=keypoints.NUM_JOINTS,
    channel_names=keypoints.JOINTS,
    flip_perm=tuple(int(i) for i in keypoints.flip_permutation()),
    _render=heatmaps.render_sparse,
    _face=body_face_box,
)
PORTRAIT = PoseScheme(
    task="portrait",
    name="ibug68-part-maps",
    num_keypoints=landmarks.NUM_LANDMARKS,
    channel_names=landmarks.PART_NAMES,
    flip_perm=tuple(int(i) for i in landmarks.flip_permutation()),
    _render=_portrait_render,
    _face=_portrait_face,
)
SCHEMES: dict[str, PoseScheme] = {"pose": BODY, "portrait": PORTRAIT}


def scheme_for(task: str) -> PoseScheme:
    """The scheme of a dataset task (``datasets.<name>.task``, or a manifest's ``task``)."""
    if task not in SCHEMES:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(SCHEMES)}")
    return SCHEMES[task]


def scheme_of_manifest(manifest: dict) -> PoseScheme:
    """The scheme shards were written with (manifests before portraits existed are body shards)."""
    return scheme_for(str(manifest.get("task", "pose")))


def pose_channels_of_manifest(manifest: dict) -> int:
    """How many pose channels the shards hold (older manifests: one per keypoint)."""
    return int(manifest.get("pose_channels", manifest["num_keypoints"]))
