"""Pose transfer on any photo: ``python -m pipelines.infer`` and the same as a Python API.

    python -m pipelines.infer --model models:/attnflow-pose@champion \\
        --source person.jpg --target-pose pose.json --out out.png
    python -m pipelines.infer --model models:/attnflow-pose@champion \\
        --source person.jpg --target-pose other_person.jpg --out out.png --sheet sheet.png
    python -m pipelines.infer --model models:/attnflow-pose@champion \\
        --pairs pairs.csv --images DIR --annotations annotation.csv --out OUT_DIR   # batch

POSE is a keypoint JSON (``[[x, y], ...]`` or ``{"keypoints": [[x, y], ...], "size": [H, W]}``), a
row of an annotation CSV in the field's format (``annotation.csv#IMAGE_NAME``; the ``:``-separated
``name:keypoints_y:keypoints_x``), or another photo.  Keypoints of a photo come from the pose extra
(mediapipe, ``make setup-pose``); a source photo needs them too unless ``--source-pose`` is given.

Photos of any size are centre-cropped to the model's aspect ratio and resized to its input size;
keypoints go through the same transform.  Python::

    from pipelines.infer import PoseTransfer
    pt = PoseTransfer.load("models:/attnflow-pose@champion")
    image = pt.transfer(source_rgb, target_keypoints, target_frame=(H, W))  # uint8 [h, w, 3]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from datasets.pose import heatmaps
from datasets.pose.keypoints import MISSING, NUM_JOINTS
from model.export import PackedGenerator, pack_inputs
from pipelines.tracking.redact import redact

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class InferenceError(ValueError):
    """A user input inference cannot use; the message says which and why."""


# ---------------------------------------------------------------------------- inputs


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image file (alpha dropped, grey expanded)."""
    p = Path(path)
    if not p.is_file():
        raise InferenceError(f"{p}: image file not found")
    data = np.fromfile(str(p), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InferenceError(f"{p}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_count(kp: np.ndarray, where: str, expected: int = NUM_JOINTS) -> np.ndarray:
    if kp.ndim != 2 or kp.shape[1] != 2:
        raise InferenceError(f"{where}: expected a list of [x, y] pairs, got shape {kp.shape}")
    if len(kp) != expected:
        raise InferenceError(f"{where}: expected {expected} keypoints (OpenPose-18 order), found {len(kp)}")
    return kp.astype(np.float32)


def read_keypoint_json(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Keypoints [18, 2] (x, y) and the (H, W) frame they refer to, if the file says."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InferenceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    frame = None
    if isinstance(doc, dict):
        if "keypoints" not in doc:
            raise InferenceError(f"{path}: expected a list of [x, y] or an object with 'keypoints'")
        if doc.get("size") is not None:
            frame = (int(doc["size"][0]), int(doc["size"][1]))
        doc = doc["keypoints"]
    try:
        kp = np.asarray(doc, dtype=np.float64)
    except (TypeError, ValueError):
        raise InferenceError(f"{path}: keypoints must be numbers [[x, y], ...]") from None
    return _check_count(kp, str(path)), frame


def read_annotation_row(path: Path, name: str | None) -> np.ndarray:
    """Keypoints [18, 2] (x, y) of one row of a field-format annotation CSV (y list, x list)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=":"))
    if not rows or not {"name", "keypoints_y", "keypoints_x"} <= set(rows[0]):
        raise InferenceError(f"{path}: expected the annotation format name:keypoints_y:keypoints_x")
    if name is None:
        if len(rows) != 1:
            raise InferenceError(f"{path}: {len(rows)} rows; pick one with {path}#IMAGE_NAME")
        row = rows[0]
    else:
        found = [r for r in rows if r["name"] == name]
        if not found:
            raise InferenceError(f"{path}: no row named {name!r}")
        row = found[0]
    try:
        ys, xs = json.loads(row["keypoints_y"]), json.loads(row["keypoints_x"])
    except json.JSONDecodeError:
        raise InferenceError(f"{path}: row {row['name']!r} has a keypoint cell that is not a JSON list") from None
    if len(ys) != len(xs):
        raise InferenceError(f"{path}: row {row['name']!r} has {len(ys)} y values but {len(xs)} x values")
    kp = np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], axis=1) if ys else np.zeros((0, 2))
    return _check_count(kp, f"{path}#{row['name']}")


def photo_keypoints(image: np.ndarray, where: str) -> np.ndarray:
    """Keypoints of the person in a photo through the pose extra, with errors that name the file."""
    from pipelines.apps.pose_extract import NoPersonFound, extract_keypoints

    try:
        return extract_keypoints(image)
    except NoPersonFound as exc:
        raise InferenceError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Fit:
    """Centre crop to the model's aspect ratio, then resize: x' = (x - x0) * sx, y' = (y - y0) * sy."""

    x0: float
    y0: float
    sx: float
    sy: float

    @classmethod
    def between(cls, frame: tuple[int, int], size: tuple[int, int]) -> "Fit":
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
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        crop = image[y0:fh - y0 if y0 else fh, x0:fw - x0 if x0 else fw]
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------- model


def load_packed(model: str) -> PackedGenerator:
    """A registered/logged MLflow model URI or a local MLflow model folder -> PackedGenerator."""
    if not (model.startswith(("models:/", "runs:/", "file:")) or (Path(model) / "MLmodel").is_file()):
        raise InferenceError(f"--model {model!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… "
                             "or a folder holding an MLmodel file")
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    from pipelines.tracking.journal import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())  # the project's store (MLFLOW_TRACKING_URI overrides)
    try:
        net = mlflow.pytorch.load_model(model, map_location="cpu")
    except MlflowException as exc:
        raise InferenceError(f"--model {model}: {exc.message.splitlines()[0]}") from None
    if not isinstance(net, PackedGenerator):
        raise InferenceError(f"--model {model}: not an AttnFlow generator (got {type(net).__name__})")
    return net.eval()


class PoseTransfer:
    """Re-pose the person of a photo: the Python API behind the CLI."""

    def __init__(self, net: PackedGenerator) -> None:
        self.net = net.eval()
        self.size: tuple[int, int] = tuple(net.image_size)  # type: ignore[assignment]
        self.sigma = float(net.heatmap_sigma)

    @classmethod
    def load(cls, model: str) -> "PoseTransfer":
        return cls(load_packed(model))

    def _pose(self, kp: np.ndarray) -> torch.Tensor:
        # The training path: quantised uint8 Gaussians, scaled to [0, 1].
        dense = heatmaps.to_dense(heatmaps.render_sparse(kp, self.size, self.sigma))
        return torch.from_numpy(dense.astype(np.float32) / 255.0)

    def prepare(self, source: np.ndarray, target_keypoints: np.ndarray, target_frame: tuple[int, int] | None = None,
                source_keypoints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source image and both poses in the model's frame: (image uint8 [h,w,3], src kp, tgt kp)."""
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise InferenceError(f"source image must be RGB uint8 [H, W, 3], got {source.dtype} {source.shape}")
        src_kp = photo_keypoints(source, "source image") if source_keypoints is None else \
            _check_count(np.asarray(source_keypoints, np.float64), "source keypoints")
        fit = Fit.between(source.shape[:2], self.size)
        image = fit.image(source, self.size)
        src = fit.keypoints(src_kp, self.size)
        tgt_kp = _check_count(np.asarray(target_keypoints, np.float64), "target keypoints")
        tgt = Fit.between(target_frame or self.size, self.size).keypoints(tgt_kp, self.size)
        if not ((tgt != MISSING).all(axis=1)).any():
            raise InferenceError("target pose: no keypoint lies inside the frame")
        return image, src, tgt

    @torch.no_grad()
    def transfer(self, source: np.ndarray, target_keypoints: np.ndarray, target_frame: tuple[int, int] | None = None,
                 source_keypoints: np.ndarray | None = None) -> np.ndarray:
        """The source person in the target pose, RGB uint8 at the model's size."""
        return self.generate(*self.prepare(source, target_keypoints, target_frame, source_keypoints))

    @torch.no_grad()
    def generate(self, image: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray) -> np.ndarray:
        """The generator on inputs already in the model's frame (see :meth:`prepare`)."""
        x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        packed = pack_inputs(x, self._pose(source_keypoints)[None], self._pose(target_keypoints)[None])
        out = self.net(packed)[0]
        return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

    def sheet(self, source: np.ndarray, target_keypoints: np.ndarray, target_frame: tuple[int, int] | None = None,
              source_keypoints: np.ndarray | None = None, scale: int = 2) -> np.ndarray:
        """source (with its skeleton) | target skeleton | output, for looking at a result."""
        from datasets.sheets.pose_sheet import draw_skeleton

        image, src, tgt = self.prepare(source, target_keypoints, target_frame, source_keypoints)
        out = self.generate(image, src, tgt)
        blank = np.full_like(image, 255)
        cells = [draw_skeleton(image, src), draw_skeleton(blank, tgt), out]
        row = np.concatenate([np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in cells], axis=1)
        return cv2.resize(row, (row.shape[1] * scale, row.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def resolve_pose(spec: str, pose_frame: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """A --target-pose/--source-pose argument -> keypoints (x, y) and the frame they refer to."""
    path_text, _, row = spec.partition("#")
    path = Path(path_text)
    if not path.is_file():
        raise InferenceError(f"{path}: pose file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        kp, frame = read_keypoint_json(path)
        return kp, frame or pose_frame
    if suffix == ".csv":
        return read_annotation_row(path, row or None), pose_frame
    if suffix in IMAGE_SUFFIXES:
        image = read_image(path)
        return photo_keypoints(image, str(path)), image.shape[:2]
    raise InferenceError(f"{path}: a pose is a .json keypoint file, an annotation .csv row (FILE.csv#NAME) "
                         f"or a photo ({', '.join(IMAGE_SUFFIXES)})")


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise InferenceError(f"{path}: cannot write (use a .png or .jpg name)")
    return path


def run_batch(pt: PoseTransfer, pairs_csv: Path, images: Path, annotations: Path, out_dir: Path,
              pose_frame: tuple[int, int] | None) -> list[Path]:
    """Every pair (``from,to``) of a pairs CSV, in order, to ``out_dir/<from>_2_<to>.png``."""
    for p in (pairs_csv, annotations):
        if not p.is_file():
            raise InferenceError(f"{p}: file not found")
    if not images.is_dir():
        raise InferenceError(f"{images}: image folder not found")
    with open(pairs_csv, newline="") as fh:
        pairs = [(r["from"], r["to"]) for r in csv.DictReader(fh)]
    written = []
    for src_name, tgt_name in pairs:
        source = read_image(images / src_name)
        src_kp = read_annotation_row(annotations, src_name)
        tgt_kp = read_annotation_row(annotations, tgt_name)
        frame = pose_frame or source.shape[:2]
        out = pt.transfer(source, tgt_kp, frame, source_keypoints=src_kp)
        written.append(save_rgb(out_dir / f"{Path(src_name).stem}_2_{Path(tgt_name).stem}.png", out))
    return written


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.infer", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models:/attnflow-pose@champion",
                    help="MLflow model URI or local model folder (default: models:/attnflow-pose@champion)")
    ap.add_argument("--source", help="photo of the person")
    ap.add_argument("--source-pose", help="keypoints of the source photo (else extracted with the pose extra)")
    ap.add_argument("--target-pose", help="keypoint JSON, annotation.csv#NAME, or a photo")
    ap.add_argument("--pose-frame", type=int, nargs=2, metavar=("H", "W"),
                    help="frame of CSV/JSON keypoints when the file does not say (default: the source photo's "
                         "size for --source-pose, the model's input size for --target-pose)")
    ap.add_argument("--out", required=True, help="output PNG (single) or folder (batch)")
    ap.add_argument("--sheet", help="also write source | target pose | output side by side")
    ap.add_argument("--pairs", type=Path, help="batch mode: pairs CSV with columns from,to")
    ap.add_argument("--images", type=Path, help="batch mode: folder of the source images")
    ap.add_argument("--annotations", type=Path, help="batch mode: annotation CSV (name:keypoints_y:keypoints_x)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.apps.pose_extract import PoseExtraMissing

    try:
        batch = args.pairs is not None
        if batch and (args.images is None or args.annotations is None):
            raise InferenceError("batch mode needs --pairs, --images and --annotations")
        if not batch and (args.source is None or args.target_pose is None):
            raise InferenceError("give --source and --target-pose (or --pairs for batch mode)")
        frame = tuple(args.pose_frame) if args.pose_frame else None
        if not batch:
            # Check the user's files before the (slower) model load.
            source = read_image(args.source)
            tgt_kp, tgt_frame = resolve_pose(args.target_pose, frame)
            if args.source_pose is None:
                src_kp = photo_keypoints(source, args.source)
            else:
                src_kp, src_frame = resolve_pose(args.source_pose, frame or source.shape[:2])
                if src_frame is not None and tuple(src_frame) != source.shape[:2]:
                    src_kp = Fit(0, 0, source.shape[1] / src_frame[1], source.shape[0] / src_frame[0]).keypoints(
                        src_kp, source.shape[:2])
        pt = PoseTransfer.load(args.model)
        if batch:
            written = run_batch(pt, args.pairs, args.images, args.annotations, Path(args.out), frame)
            print(f"wrote {len(written)} images to {args.out}")
            return 0
        out = pt.transfer(source, tgt_kp, tgt_frame, src_kp)
        print(f"wrote {save_rgb(args.out, out)}")
        if args.sheet:
            print(f"wrote {save_rgb(args.sheet, pt.sheet(source, tgt_kp, tgt_frame, src_kp))}")
        return 0
    except (InferenceError, PoseExtraMissing) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
