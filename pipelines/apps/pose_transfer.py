"""Pose transfer on any photo: the Python API behind ``python -m pipelines.infer``.

from pipelines.apps.pose_transfer import PoseTransfer
pt = PoseTransfer.load("models:/attnflow-pose@champion")
out = pt.transfer(photo_rgb, target_keypoints, target_frame=(h, w))
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.pose import heatmaps
from datasets.pose.keypoints import MISSING, NUM_JOINTS
from datasets.sheets.pose_sheet import draw_skeleton
from model.export import PackedGenerator, pack_inputs
from pipelines.apps.inputs import (
    IMAGE_SUFFIXES,
    InputError,
    PointFormat,
    check_points,
    read_csv_points,
    read_image,
    read_points_json,
    save_rgb,
)
from pipelines.apps.pose_extract import NoPersonFound, extract_keypoints
from pipelines.runs.source import GeneratorSource, SourceError
from pipelines.training.restore import load_generator

KEYPOINTS = PointFormat("keypoints", NUM_JOINTS, "OpenPose-18 order", "annotation")


def photo_keypoints(image: np.ndarray, where: str) -> np.ndarray:
    """Keypoints of the person in a photo through the pose extra, with errors that name the file."""
    try:
        return extract_keypoints(image)
    except NoPersonFound as exc:
        raise InputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Fit:
    """Centre crop to the model's aspect ratio, then resize: x' = (x - x0) * sx, y' = (y - y0) * sy."""

    x0: float
    y0: float
    sx: float
    sy: float

    @classmethod
    def between(cls, frame: tuple[int, int], size: tuple[int, int]) -> Fit:
        (h, w), (th, tw) = frame, size
        if w * th > h * tw:  # too wide: crop the sides
            cw = h * tw / th
            return cls((w - cw) / 2, 0.0, tw / cw, th / h)
        ch = w * th / tw
        return cls(0.0, (h - ch) / 2, tw / w, th / ch)

    def keypoints(self, kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        out = np.asarray(kp, np.float32).copy()
        missing = (out[:, 0] == MISSING) | (out[:, 1] == MISSING)
        # Pixel centres map to pixel centres, as datasets.raw.layout.rescale_keypoints does.
        out[:, 0] = (out[:, 0] - self.x0 + 0.5) * self.sx - 0.5
        out[:, 1] = (out[:, 1] - self.y0 + 0.5) * self.sy - 0.5
        h, w = size
        outside = (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 0] > w - 1) | (out[:, 1] > h - 1)
        out[missing | outside] = MISSING
        return out

    def image(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        fh, fw = image.shape[:2]
        x0, y0 = round(self.x0), round(self.y0)
        crop = image[y0 : fh - y0 if y0 else fh, x0 : fw - x0 if x0 else fw]
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def to_pictures(images: torch.Tensor) -> list[np.ndarray]:
    """Generator output [B, 3, H, W] in [-1, 1] -> B RGB uint8 [H, W, 3] arrays."""
    return [((o.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for o in images]


def combination_strip(maps: dict[int, torch.Tensor], index: int, size: tuple[int, int]) -> np.ndarray:
    """Item ``index``'s combination maps as one grey uint8 strip [h, w * scales]: per scale (coarse
    to fine, nearest-scaled to ``size``) 255 where the attention warp is taken, 0 where the flow warp
    is; [h, 0] for a variant without both branches."""
    h, w = size
    cells = [
        torch.nn.functional.interpolate(m[index : index + 1].float(), size=(h, w), mode="nearest")[0, 0]
        for _, m in sorted(maps.items(), reverse=True)
    ]
    strip = torch.cat(cells, dim=1) if cells else torch.zeros(h, 0)
    return (strip.clamp(0, 1) * 255).round().byte().numpy()


class PoseTransfer:
    """Re-pose the person of a photo: the Python API behind the CLI."""

    def __init__(self, net: PackedGenerator) -> None:
        self.net = net.eval()
        self.size: tuple[int, int] = tuple(net.image_size)  # type: ignore[assignment]
        self.sigma = float(net.heatmap_sigma)

    @classmethod
    def load(cls, model: str) -> PoseTransfer:
        """From an MLflow model URI or folder, or a training checkpoint folder (GeneratorSource)."""
        try:
            return cls(load_generator(GeneratorSource.parse(model)).as_packed())
        except SourceError as exc:
            raise InputError(str(exc)) from None

    def _pose(self, kp: np.ndarray) -> torch.Tensor:
        # The training path: quantised uint8 Gaussians, scaled to [0, 1].
        dense = heatmaps.to_dense(heatmaps.render_sparse(kp, self.size, self.sigma))
        return torch.from_numpy(dense.astype(np.float32) / 255.0)

    def prepare(
        self,
        source: np.ndarray,
        target_keypoints: np.ndarray,
        target_frame: tuple[int, int] | None = None,
        source_keypoints: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source image and both poses in the model's frame: (image uint8 [h,w,3], src kp, tgt kp)."""
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise InputError(f"source image must be RGB uint8 [H, W, 3], got {source.dtype} {source.shape}")
        src_kp = (
            photo_keypoints(source, "source image")
            if source_keypoints is None
            else check_points(np.asarray(source_keypoints, np.float64), "source keypoints", KEYPOINTS)
        )
        fit = Fit.between((source.shape[0], source.shape[1]), self.size)
        image = fit.image(source, self.size)
        src = fit.keypoints(src_kp, self.size)
        tgt_kp = check_points(np.asarray(target_keypoints, np.float64), "target keypoints", KEYPOINTS)
        tgt = Fit.between(target_frame or self.size, self.size).keypoints(tgt_kp, self.size)
        if not ((tgt != MISSING).all(axis=1)).any():
            raise InputError("target pose: no keypoint lies inside the frame")
        return image, src, tgt

    @torch.no_grad()
    def transfer(
        self,
        source: np.ndarray,
        target_keypoints: np.ndarray,
        target_frame: tuple[int, int] | None = None,
        source_keypoints: np.ndarray | None = None,
    ) -> np.ndarray:
        """The source person in the target pose, RGB uint8 at the model's size."""
        return self.generate(*self.prepare(source, target_keypoints, target_frame, source_keypoints))

    @torch.no_grad()
    def generate(
        self, image: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray
    ) -> np.ndarray:
        """The generator on inputs already in the model's frame (see :meth:`prepare`)."""
        x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        packed = pack_inputs(x, self._pose(source_keypoints)[None], self._pose(target_keypoints)[None])
        return to_pictures(self.net(packed))[0]

    @torch.no_grad()
    def generate_with_maps(
        self, image: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`generate`, and the combination maps as one grey uint8 strip (see
        :func:`combination_strip`)."""
        x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        out = self.net.generator(x, self._pose(source_keypoints)[None], self._pose(target_keypoints)[None])
        return to_pictures(out.image)[0], combination_strip(out.combination_maps, 0, self.size)

    def sheet(
        self,
        source: np.ndarray,
        target_keypoints: np.ndarray,
        target_frame: tuple[int, int] | None = None,
        source_keypoints: np.ndarray | None = None,
        scale: int = 2,
    ) -> np.ndarray:
        """source (with its skeleton) | target skeleton | output, for looking at a result."""
        image, src, tgt = self.prepare(source, target_keypoints, target_frame, source_keypoints)
        out = self.generate(image, src, tgt)
        blank = np.full_like(image, 255)
        cells = [draw_skeleton(image, src), draw_skeleton(blank, tgt), out]
        row = np.concatenate(
            [np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in cells], axis=1
        )
        return cv2.resize(row, (row.shape[1] * scale, row.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def resolve_pose(spec: str, pose_frame: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """A --target-pose/--source-pose argument -> keypoints (x, y) and the frame they refer to."""
    path_text, _, row = spec.partition("#")
    path = Path(path_text)
    if not path.is_file():
        raise InputError(f"{path}: pose file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        kp, frame = read_points_json(path, KEYPOINTS)
        return kp, frame or pose_frame
    if suffix == ".csv":
        return read_csv_points(path, row or None, KEYPOINTS), pose_frame
    if suffix in IMAGE_SUFFIXES:
        image = read_image(path)
        return photo_keypoints(image, str(path)), (image.shape[0], image.shape[1])
    raise InputError(
        f"{path}: a pose is a .json keypoint file, an annotation .csv row (FILE.csv#NAME) "
        f"or a photo ({', '.join(IMAGE_SUFFIXES)})"
    )


def run_batch(
    pt: PoseTransfer,
    pairs_csv: Path,
    images: Path,
    annotations: Path,
    out_dir: Path,
    pose_frame: tuple[int, int] | None,
) -> list[Path]:
    """Every pair (``from,to``) of a pairs CSV, in order, to ``out_dir/<from>_2_<to>.png``."""
    for p in (pairs_csv, annotations):
        if not p.is_file():
            raise InputError(f"{p}: file not found")
    if not images.is_dir():
        raise InputError(f"{images}: image folder not found")
    with open(pairs_csv, newline="") as fh:
        pairs = [(r["from"], r["to"]) for r in csv.DictReader(fh)]
    written = []
    for src_name, tgt_name in pairs:
        source = read_image(images / src_name)
        src_kp = read_csv_points(annotations, src_name, KEYPOINTS)
        tgt_kp = read_csv_points(annotations, tgt_name, KEYPOINTS)
        frame = pose_frame or (source.shape[0], source.shape[1])
        out = pt.transfer(source, tgt_kp, frame, source_keypoints=src_kp)
        written.append(save_rgb(out_dir / f"{Path(src_name).stem}_2_{Path(tgt_name).stem}.png", out))
    return written
