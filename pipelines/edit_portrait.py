"""Portrait editing: move a face's 68 landmarks with the edit model, render the face that follows.

    python -m pipelines.edit_portrait --model models:/attnflow-portrait@champion --image face.jpg \\
        [--landmarks FILE|auto] [--rotate DEG] [--shift DX DY] [--mouth-open A] [--smile A] \\
        [--eyes-closed A] [--brows A] [--drive OTHER_FACE [--drive-landmarks FILE|auto]] \\
        [--sweep EDIT] [--crop auto|face|none] [--scale N] --out OUT.png

``--model`` is an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/…``),
a local MLflow model folder, or a training checkpoint folder (``runs/<run>/checkpoints`` for its
newest committed checkpoint, or one ``step-NNNNNNNNN`` folder; its EMA generator is used).

Landmarks (``--landmarks``): ``auto`` (default) runs MediaPipe Face Mesh (the pose extra) and maps
its 468 points to the 68 iBUG points (pipelines/face_mesh.py); a file is a JSON list of 68
``[x, y]`` (or ``{"landmarks": [...], "size": [H, W]}``), an iBUG ``.pts`` file, or a row of a
portrait landmark CSV (``portrait-landmarks-test.csv#NAME``, ``name:landmarks_y:landmarks_x``).
-1 marks a missing point.

Framing: an image already at the model's size is used as it is (``--crop auto``); any other photo
is cut to a square around its landmarks framed like the training faces (:data:`FACE_SCALE`,
:data:`FACE_CENTRE`, measured on the synthetic set) and resized to the model's size.

Edits (docs/portrait.md, datasets/portrait_edit.py) are applied in this order: ``--drive`` (the
other face's expression and head pose on this face's geometry), then brows, eyes-closed, smile,
mouth-open, then rotate, then shift.  Ranges: rotate [-45, 45] degrees, the four expression
strengths [-1, 1], shift within half the model's frame.  ``--sweep EDIT`` writes one row of that
edit at several strengths (on top of the other edits) instead of a single image.

Python::

    from pipelines.edit_portrait import Edits, PortraitEditor
    editor = PortraitEditor.load("models:/attnflow-portrait@champion")
    face = editor.prepare(rgb)                      # landmarks from the face mesh
    out = editor.edit(face, Edits(smile=0.8, rotate=10))   # uint8 [h, w, 3]

Exit status: 0 written, 2 a bad input (each error names the file or option and the reason).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from datasets.synthetic import face_edits as PE
from datasets.pose.landmarks import NUM_LANDMARKS, NUM_PARTS, decode_row, visible
from datasets.pose.scheme import PORTRAIT
from model.export import PackedGenerator, pack_inputs

# Training framing (synthetic set, 64×64): the landmarks' box is 33/64 of the frame's side
# (median over the training views) and its centre sits at (0.49, 0.606) of the frame - the hair
# takes the space above the brows.  A photo is cut the same way so the face fills the model's
# frame as in training.
FACE_SCALE = 64.0 / 33.0
FACE_CENTRE = (0.49, 0.606)
EXPRESSION_EDITS: tuple[str, ...] = ("brows", "eyes_closed", "smile", "mouth_open")
SWEEPS: dict[str, tuple[float, ...]] = {
    "rotate": (-30.0, -15.0, 0.0, 15.0, 30.0),
    "mouth_open": (-1.0, 0.0, 0.33, 0.67, 1.0),
    "smile": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "eyes_closed": (-1.0, 0.0, 0.33, 0.67, 1.0),
    "brows": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "shift_x": (-8.0, -4.0, 0.0, 4.0, 8.0),
    "shift_y": (-8.0, -4.0, 0.0, 4.0, 8.0),
}


class EditError(ValueError):
    """An input the editor cannot use; the message names the file or option and why."""


# ---------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class Edits:
    """One set of landmark edits; strengths as in datasets.synthetic.face_edits (0 = unchanged)."""

    rotate: float = 0.0  # degrees, counter-clockwise on screen
    shift: tuple[float, float] = (0.0, 0.0)  # pixels of the model's frame (dx, dy)
    mouth_open: float = 0.0
    smile: float = 0.0
    eyes_closed: float = 0.0
    brows: float = 0.0
    drive: np.ndarray | None = field(default=None, compare=False)  # driver landmarks in the model frame

    def check(self, frame: tuple[int, int] | None = None) -> "Edits":
        """Raise :class:`EditError` naming the option when a strength is outside its valid range."""
        def _in(name: str, value: float, lo: float, hi: float, unit: str = "") -> None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise EditError(f"--{name.replace('_', '-')} {value:g}{unit} is outside its valid range "
                                f"[{lo:g}, {hi:g}]{unit}")
        _in("rotate", self.rotate, *PE.ROTATE_RANGE, unit="°")
        for name in EXPRESSION_EDITS:
            _in(name, getattr(self, name), *PE.STRENGTH_RANGE)
        if frame is not None:
            h, w = frame
            _in("shift (dx)", self.shift[0], -w / 2, w / 2, " px")
            _in("shift (dy)", self.shift[1], -h / 2, h / 2, " px")
        return self

    def with_value(self, edit: str, value: float) -> "Edits":
        if edit == "shift_x":
            return replace(self, shift=(value, self.shift[1]))
        if edit == "shift_y":
            return replace(self, shift=(self.shift[0], value))
        return replace(self, **{edit: value})


def target_landmarks(landmarks: np.ndarray, edits: Edits, frame: tuple[int, int]) -> np.ndarray:
    """The edited landmarks (float32 [68, 2], -1 missing) in the same frame, in the documented order."""
    edits.check(frame)
    lm = np.asarray(landmarks, np.float32)
    try:
        if edits.drive is not None:
            lm = PE.drive(lm, edits.drive, frame)
        for name in EXPRESSION_EDITS:
            value = getattr(edits, name)
            if value:
                lm = getattr(PE, name)(lm, value)
        if edits.rotate:
            lm = PE.rotate(lm, edits.rotate)
        if edits.shift != (0.0, 0.0):
            lm = PE.shift(lm, edits.shift[0], edits.shift[1], frame)
    except ValueError as exc:
        raise EditError(f"cannot edit these landmarks: {exc}") from None
    return PE.clip_to_frame(lm, frame)


# ---------------------------------------------------------------------------- inputs


def read_image(path: str | Path) -> np.ndarray:
    from pipelines.infer import InferenceError, read_image as _read

    try:
        return _read(path)
    except InferenceError as exc:
        raise EditError(str(exc)) from None


def _check_landmarks(lm: np.ndarray, where: str) -> np.ndarray:
    if lm.ndim != 2 or lm.shape[1] != 2:
        raise EditError(f"{where}: expected a list of [x, y] pairs, got shape {lm.shape}")
    if len(lm) != NUM_LANDMARKS:
        raise EditError(f"{where}: expected {NUM_LANDMARKS} landmarks (iBUG order), found {len(lm)}")
    if not np.isfinite(lm).all():
        raise EditError(f"{where}: landmarks must be finite numbers (-1 marks a missing point)")
    out = lm.astype(np.float32)
    out[(out[:, 0] < 0) | (out[:, 1] < 0)] = -1
    return out


def read_landmarks(spec: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Landmarks [68, 2] (x, y) from a JSON, ``.pts`` or portrait CSV row (``FILE.csv#NAME``),
    and the (H, W) frame they refer to when the file says."""
    path_text, _, row = spec.partition("#")
    path = Path(path_text)
    if not path.is_file():
        raise EditError(f"{path}: landmark file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise EditError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        frame = None
        if isinstance(doc, dict):
            if "landmarks" not in doc:
                raise EditError(f"{path}: expected a list of [x, y] or an object with 'landmarks'")
            if doc.get("size") is not None:
                frame = (int(doc["size"][0]), int(doc["size"][1]))
            doc = doc["landmarks"]
        try:
            lm = np.asarray(doc, dtype=np.float64)
        except (TypeError, ValueError):
            raise EditError(f"{path}: landmarks must be numbers [[x, y], ...]") from None
        return _check_landmarks(lm, str(path)), frame
    if suffix == ".pts":
        from pipelines.convert_portraits import ConvertError, read_pts

        try:
            return _check_landmarks(read_pts(path), str(path)), None
        except ConvertError as exc:
            raise EditError(str(exc)) from None
    if suffix == ".csv":
        import csv

        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter=":"))
        if not rows or not {"name", "landmarks_y", "landmarks_x"} <= set(rows[0]):
            raise EditError(f"{path}: expected the portrait format name:landmarks_y:landmarks_x")
        found = [r for r in rows if r["name"] == row] if row else rows
        if not found:
            raise EditError(f"{path}: no row named {row!r}")
        if len(found) > 1:
            raise EditError(f"{path}: {len(found)} rows; pick one with {path}#IMAGE_NAME")
        try:
            ys, xs = json.loads(found[0]["landmarks_y"]), json.loads(found[0]["landmarks_x"])
        except json.JSONDecodeError:
            raise EditError(f"{path}: row {found[0]['name']!r} has a cell that is not a JSON list") from None
        if len(ys) != len(xs):
            raise EditError(f"{path}: row {found[0]['name']!r} has {len(ys)} y values but {len(xs)} x values")
        if len(ys) != NUM_LANDMARKS:
            raise EditError(f"{path}#{found[0]['name']}: expected {NUM_LANDMARKS} landmarks (iBUG order), "
                            f"found {len(ys)}")
        return decode_row(json.dumps(ys), json.dumps(xs)), None
    raise EditError(f"{path}: landmarks are a .json, an iBUG .pts or a portrait CSV row (FILE.csv#NAME)")


def photo_landmarks(image: np.ndarray, where: str) -> np.ndarray:
    """Landmarks of the face in a photo through the face mesh, with errors that name the file."""
    from pipelines.apps.face_mesh import NoFaceFound, extract_landmarks

    try:
        return extract_landmarks(image)
    except NoFaceFound as exc:
        raise EditError(f"{where}: {exc}; give its landmarks with --landmarks FILE") from None


def frame_face(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square the training framing puts around these landmarks and resize it to ``size``;
    returns (image, landmarks in the new frame).  Pixel centres map to pixel centres."""
    lm = np.asarray(landmarks, np.float64)
    ok = visible(lm)
    if ok.sum() < 3:
        raise EditError("fewer than 3 landmarks present: cannot frame the face")
    (xa, ya), (xb, yb) = lm[ok].min(0), lm[ok].max(0)
    side = max(xb - xa, yb - ya) * FACE_SCALE
    h, w = size
    sx, sy = w / side, h / side
    # (x0, y0): the region's top-left edge in the landmarks' coordinates (pixel centres at
    # integers, so pixel i spans [i - 0.5, i + 0.5]); output = (input - edge) * scale - 0.5, as one
    # affine warp, the edge colour beyond the photo.
    x0 = (xa + xb) / 2 - FACE_CENTRE[0] * side
    y0 = (ya + yb) / 2 - FACE_CENTRE[1] * side
    affine = np.array([[sx, 0.0, -x0 * sx - 0.5], [0.0, sy, -y0 * sy - 0.5]])
    # Area-average first when shrinking a lot, so the face is not aliased.
    src = image
    factor = int(min(1 / sx, 1 / sy))
    if factor >= 2:
        src = cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)
        pre = np.array([[factor, 0.0, (factor - 1) / 2], [0.0, factor, (factor - 1) / 2], [0, 0, 1]])
        affine = affine @ pre  # small-image pixel centre -> full-image pixel centre -> output
    out = cv2.warpAffine(src, affine[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    new = np.full_like(lm, -1.0)
    new[ok, 0] = (lm[ok, 0] - x0) * sx - 0.5
    new[ok, 1] = (lm[ok, 1] - y0) * sy - 0.5
    return out, PE.clip_to_frame(new.astype(np.float32), size)


# ---------------------------------------------------------------------------- model


def load_generator(model: str) -> PackedGenerator:
    """An MLflow URI / model folder, or a training checkpoint folder -> the packed generator."""
    path = Path(model)
    if not model.startswith(("models:/", "runs:/", "file:")) and path.exists() and not (path / "MLmodel").is_file():
        from pipelines.evaluate import EvaluationError, ema_generator, load_checkpoint

        try:
            state, _ = load_checkpoint(path)
        except EvaluationError as exc:
            raise EditError(f"--model {model}: {exc}") from None
        g, mcfg = ema_generator(state)
        config = state.get("config") or {}
        name = (config.get("train") or {}).get("dataset")
        spec = (config.get("datasets") or {}).get(name) or {}
        if "image_size" not in spec:
            raise EditError(f"--model {model}: the checkpoint's config does not name its dataset's image size")
        sigma = spec.get("pose_sigma") or (config.get("preprocess") or {}).get("heatmap_sigma", 1.0)
        return PackedGenerator(g, mcfg.pose_channels, tuple(spec["image_size"]), heatmap_sigma=float(sigma))
    from pipelines.infer import InferenceError, load_packed

    try:
        return load_packed(model)
    except InferenceError as exc:
        raise EditError(str(exc).replace("expected models:/", "expected a checkpoint folder, models:/")) from None


@dataclass
class Face:
    """A face in the model's frame: the image and its landmarks."""

    image: np.ndarray  # uint8 [h, w, 3]
    landmarks: np.ndarray  # float32 [68, 2], -1 missing


class PortraitEditor:
    """Edit a face through a portrait generator: the Python API behind the CLI."""

    def __init__(self, net: PackedGenerator) -> None:
        if net.pose_channels != NUM_PARTS:
            raise EditError(f"the model takes {net.pose_channels} pose channels, not the {NUM_PARTS} portrait "
                            "part maps: it is not a portrait model (use pipelines.infer for pose transfer)")
        self.net = net.eval()
        self.size: tuple[int, int] = tuple(net.image_size)  # type: ignore[assignment]
        self.sigma = float(net.heatmap_sigma)

    @classmethod
    def load(cls, model: str) -> "PortraitEditor":
        return cls(load_generator(model))

    def prepare(self, image: np.ndarray, landmarks: np.ndarray | None = None, frame: tuple[int, int] | None = None,
                crop: str = "auto", where: str = "image") -> Face:
        """The face in the model's frame.  ``landmarks`` None: from the face mesh; ``frame``: the
        (H, W) the landmarks refer to when not the image's own size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EditError(f"{where}: expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        lm = photo_landmarks(image, where) if landmarks is None else _check_landmarks(
            np.asarray(landmarks, np.float64), f"{where} landmarks")
        if frame is not None and tuple(frame) != image.shape[:2]:
            fy, fx = image.shape[0] / frame[0], image.shape[1] / frame[1]
            ok = visible(lm)
            lm = lm.copy()
            lm[ok] = (lm[ok] + 0.5) * [fx, fy] - 0.5
        if crop == "none" or (crop == "auto" and image.shape[:2] == self.size):
            if image.shape[:2] != self.size:
                h, w = self.size
                sx, sy = w / image.shape[1], h / image.shape[0]
                ok = visible(lm)
                lm = lm.copy()
                lm[ok] = (lm[ok] + 0.5) * [sx, sy] - 0.5
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            face = Face(np.ascontiguousarray(image), PE.clip_to_frame(lm, self.size))
        else:
            face = Face(*frame_face(image, lm, self.size))
        if visible(face.landmarks).sum() < 20:
            raise EditError(f"{where}: fewer than 20 of the 68 landmarks lie inside the face frame")
        return face

    def _pose(self, lm: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(PORTRAIT.dense(lm, self.size, self.sigma))

    @torch.no_grad()
    def generate(self, face: Face, target: np.ndarray) -> np.ndarray:
        """The face re-rendered to follow ``target`` landmarks (model frame), uint8 [h, w, 3]."""
        return self.generate_many(face, [target])[0]

    @torch.no_grad()
    def generate_many(self, face: Face, targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = torch.from_numpy(face.image).permute(2, 0, 1).float()[None] / 127.5 - 1
        src = self._pose(face.landmarks)[None]
        tgt = torch.stack([self._pose(t) for t in targets])
        n = len(targets)
        out = self.net(pack_inputs(x.expand(n, -1, -1, -1), src.expand(n, -1, -1, -1), tgt))
        return [((o.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for o in out]

    def edit(self, face: Face, edits: Edits) -> np.ndarray:
        return self.generate(face, target_landmarks(face.landmarks, edits, self.size))

    def sweep(self, face: Face, edit: str, base: Edits = Edits(),
              values: Sequence[float] | None = None) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(strength, target landmarks, image) for ``edit`` at each strength, on top of ``base``."""
        if edit not in SWEEPS:
            raise EditError(f"--sweep {edit!r}: choose one of {', '.join(SWEEPS)}")
        values = SWEEPS[edit] if values is None else values
        targets = [target_landmarks(face.landmarks, base.with_value(edit, v), self.size) for v in values]
        return list(zip(values, targets, self.generate_many(face, targets)))


# ---------------------------------------------------------------------------- pictures


def _label(cell: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    band = np.full((height, cell.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (2, height - 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([cell, band], axis=0)


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    if scale <= 1:
        return image
    return cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def sweep_sheet(face: Face, rows: list[tuple[float, np.ndarray, np.ndarray]], edit: str, scale: int = 3) -> np.ndarray:
    """source | one cell per strength (generated face), captioned, as one uint8 image."""
    cells = [_label(enlarge(face.image, scale), "source")]
    cells += [_label(enlarge(img, scale), f"{edit} {v:+g}") for v, _, img in rows]
    pad = [np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in cells]
    return np.concatenate(pad, axis=1)


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise EditError(f"{path}: cannot write (use a .png or .jpg name)")
    return path


# ---------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.edit_portrait", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models:/attnflow-portrait@champion",
                    help="MLflow model URI, local model folder or checkpoint folder "
                         "(default: models:/attnflow-portrait@champion)")
    ap.add_argument("--image", required=True, help="the face to edit")
    ap.add_argument("--landmarks", default="auto",
                    help="68 landmarks of --image: auto (face mesh, default), FILE.json, FILE.pts or FILE.csv#NAME")
    ap.add_argument("--rotate", type=float, default=0.0, metavar="DEG", help="in-plane rotation, [-45, 45]")
    ap.add_argument("--shift", type=float, nargs=2, default=(0.0, 0.0), metavar=("DX", "DY"),
                    help="translation in pixels of the model's frame")
    ap.add_argument("--mouth-open", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 closes")
    ap.add_argument("--smile", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 frowns")
    ap.add_argument("--eyes-closed", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 widens")
    ap.add_argument("--brows", type=float, default=0.0, metavar="A", help="[-1, 1]; < 0 frowns")
    ap.add_argument("--drive", help="another face: its expression and head pose drive this one")
    ap.add_argument("--drive-landmarks", default="auto", help="landmarks of --drive (as --landmarks)")
    ap.add_argument("--sweep", choices=sorted(SWEEPS), help="write a row of this edit at several strengths")
    ap.add_argument("--crop", choices=("auto", "face", "none"), default="auto",
                    help="auto: frame the face unless the image already has the model's size")
    ap.add_argument("--scale", type=int, default=1, help="enlarge the written image N times (nearest)")
    ap.add_argument("--out", required=True, help="output PNG")
    return ap


def _face_input(image_path: str, landmarks: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """(image, landmarks, the frame they refer to) of a --image/--drive argument."""
    image = read_image(image_path)
    if landmarks == "auto":
        return image, photo_landmarks(image, image_path), None
    lm, frame = read_landmarks(landmarks)
    return image, lm, frame


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.apps.pose_extract import PoseExtraMissing

    try:
        edits = Edits(rotate=args.rotate, shift=tuple(args.shift), mouth_open=args.mouth_open, smile=args.smile,
                      eyes_closed=args.eyes_closed, brows=args.brows).check()
        if args.scale < 1 or args.scale > 16:
            raise EditError(f"--scale {args.scale} must be in 1..16")
        # The user's inputs are checked before the (slower) model load.
        image, lm, frame = _face_input(args.image, args.landmarks)
        drive = _face_input(args.drive, args.drive_landmarks) if args.drive else None
        editor = PortraitEditor.load(args.model)
        face = editor.prepare(image, lm, frame, args.crop, args.image)
        if drive is not None:
            driver = editor.prepare(drive[0], drive[1], drive[2], args.crop, args.drive)
            edits = replace(edits, drive=driver.landmarks)
        edits.check(editor.size)
        if args.sweep:
            rows = editor.sweep(face, args.sweep, edits)
            out = save_rgb(args.out, sweep_sheet(face, rows, args.sweep, scale=max(args.scale, 3)))
        else:
            out = save_rgb(args.out, enlarge(editor.edit(face, edits), args.scale))
        print(f"wrote {out}")
        return 0
    except (EditError, PoseExtraMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
