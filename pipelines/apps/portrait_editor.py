"""Portrait editing: move a face's 68 landmarks with the edit model and render the face that follows.

The Python API behind ``python -m pipelines.edit_portrait``::

    from pipelines.apps.portrait_editor import Edits, PortraitEditor
    editor = PortraitEditor.load("models:/attnflow-portrait@champion")
    face = editor.prepare(photo_rgb)              # landmarks from the face mesh (pose extra)
    out = editor.edit(face, Edits(smile=0.8, rotate=10))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from datasets.faces import edits as face_edits
from datasets.pose.landmarks import NUM_LANDMARKS, NUM_PARTS, visible
from datasets.pose.scheme import PORTRAIT
from datasets.raw.portrait_import import ConvertError, read_pts
from datasets.sheets.cells import enlarge, label
from model.export import PackedGenerator, pack_inputs
from pipelines.apps.face_mesh import NoFaceFound, extract_landmarks
from pipelines.apps.inputs import (
    InputError,
    PointFormat,
    check_points,
    read_csv_points,
    read_image,
    read_points_json,
)
from pipelines.runs.source import GeneratorSource, SourceError
from pipelines.training.restore import load_generator

LANDMARKS = PointFormat("landmarks", NUM_LANDMARKS, "iBUG order", "portrait")

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


def cli_option(edit: str) -> str:
    """How ``python -m pipelines.edit_portrait`` spells an edit: ``--mouth-open``, ``--shift (dx)``."""
    return {"shift_x": "--shift (dx)", "shift_y": "--shift (dy)"}.get(edit, f"--{edit.replace('_', '-')}")


@dataclass(frozen=True)
class Edits:
    """One set of landmark edits; strengths as in datasets.faces.edits (0 = unchanged)."""

    rotate: float = 0.0  # degrees, counter-clockwise on screen
    shift: tuple[float, float] = (0.0, 0.0)  # pixels of the model's frame (dx, dy)
    mouth_open: float = 0.0
    smile: float = 0.0
    eyes_closed: float = 0.0
    brows: float = 0.0
    drive: np.ndarray | None = field(default=None, compare=False)  # driver landmarks in the model frame

    def check(self, frame: tuple[int, int] | None = None, label: Callable[[str], str] | None = None) -> Edits:
        """Raise :class:`InputError` naming the option when a strength is outside its valid range.

        ``label`` names an edit (``rotate``, ``smile``, ..., ``shift_x``, ``shift_y``) in the
        message; the default is the CLI option (``--smile``, ``--shift (dx)``)."""
        name_of = label or cli_option

        def _in(name: str, value: float, lo: float, hi: float, unit: str = "") -> None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise InputError(
                    f"{name_of(name)} {value:g}{unit} is outside its valid range [{lo:g}, {hi:g}]{unit}"
                )

        _in("rotate", self.rotate, *face_edits.ROTATE_RANGE, unit="°")
        for name in EXPRESSION_EDITS:
            _in(name, getattr(self, name), *face_edits.STRENGTH_RANGE)
        if frame is not None:
            h, w = frame
            _in("shift_x", self.shift[0], -w / 2, w / 2, " px")
            _in("shift_y", self.shift[1], -h / 2, h / 2, " px")
        return self

    def with_value(self, edit: str, value: float) -> Edits:
        if edit == "shift_x":
            return replace(self, shift=(value, self.shift[1]))
        if edit == "shift_y":
            return replace(self, shift=(self.shift[0], value))
        change: dict[str, Any] = {edit: value}  # a field named at run time: rotate, smile, ...
        return replace(self, **change)


def target_landmarks(landmarks: np.ndarray, edits: Edits, frame: tuple[int, int]) -> np.ndarray:
    """The edited landmarks (float32 [68, 2], -1 missing) in the same frame, in the documented order."""
    edits.check(frame)
    lm = np.asarray(landmarks, np.float32)
    try:
        if edits.drive is not None:
            lm = face_edits.drive(lm, edits.drive, frame)
        for name in EXPRESSION_EDITS:
            value = getattr(edits, name)
            if value:
                lm = getattr(face_edits, name)(lm, value)
        if edits.rotate:
            lm = face_edits.rotate(lm, edits.rotate)
        if edits.shift != (0.0, 0.0):
            lm = face_edits.shift(lm, edits.shift[0], edits.shift[1], frame)
    except ValueError as exc:
        raise InputError(f"cannot edit these landmarks: {exc}") from None
    return face_edits.clip_to_frame(lm, frame)


def read_landmarks(spec: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Landmarks [68, 2] (x, y) from a JSON, ``.pts`` or portrait CSV row (``FILE.csv#NAME``),
    and the (H, W) frame they refer to when the file says."""
    path_text, _, row = spec.partition("#")
    path = Path(path_text)
    if not path.is_file():
        raise InputError(f"{path}: landmark file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_points_json(path, LANDMARKS)
    if suffix == ".pts":
        try:
            return check_points(read_pts(path), str(path), LANDMARKS), None
        except ConvertError as exc:
            raise InputError(str(exc)) from None
    if suffix == ".csv":
        return read_csv_points(path, row or None, LANDMARKS), None
    raise InputError(f"{path}: landmarks are a .json, an iBUG .pts or a portrait CSV row (FILE.csv#NAME)")


def photo_landmarks(image: np.ndarray, where: str) -> np.ndarray:
    """Landmarks of the face in a photo through the face mesh, with errors that name the file."""
    try:
        return extract_landmarks(image)
    except NoFaceFound as exc:
        raise InputError(f"{where}: {exc}; give its landmarks with --landmarks FILE") from None


def frame_face(
    image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square the training framing puts around these landmarks and resize it to ``size``;
    returns (image, landmarks in the new frame).  Pixel centres map to pixel centres."""
    lm = np.asarray(landmarks, np.float64)
    ok = visible(lm)
    if ok.sum() < 3:
        raise InputError("fewer than 3 landmarks present: cannot frame the face")
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
        src = cv2.resize(
            image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA
        )
        pre = np.array([[factor, 0.0, (factor - 1) / 2], [0.0, factor, (factor - 1) / 2], [0, 0, 1]])
        affine = affine @ pre  # small-image pixel centre -> full-image pixel centre -> output
    out = cv2.warpAffine(src, affine[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    new = np.full_like(lm, -1.0)
    new[ok, 0] = (lm[ok, 0] - x0) * sx - 0.5
    new[ok, 1] = (lm[ok, 1] - y0) * sy - 0.5
    return out, face_edits.clip_to_frame(new.astype(np.float32), size)


@dataclass
class Face:
    """A face in the model's frame: the image and its landmarks."""

    image: np.ndarray  # uint8 [h, w, 3]
    landmarks: np.ndarray  # float32 [68, 2], -1 missing


class PortraitEditor:
    """Edit a face through a portrait generator: the Python API behind the CLI."""

    def __init__(self, net: PackedGenerator) -> None:
        if net.pose_channels != NUM_PARTS:
            raise InputError(
                f"the model takes {net.pose_channels} pose channels, not the {NUM_PARTS} portrait "
                "part maps: it is not a portrait model (use pipelines.infer for pose transfer)"
            )
        self.net = net.eval()
        self.size: tuple[int, int] = tuple(net.image_size)  # type: ignore[assignment]
        self.sigma = float(net.heatmap_sigma)

    @classmethod
    def load(cls, model: str) -> PortraitEditor:
        """From an MLflow model URI or folder, or a training checkpoint folder (GeneratorSource)."""
        try:
            return cls(load_generator(GeneratorSource.parse(model)).as_packed())
        except SourceError as exc:
            raise InputError(str(exc)) from None

    def prepare(
        self,
        image: np.ndarray,
        landmarks: np.ndarray | None = None,
        frame: tuple[int, int] | None = None,
        crop: str = "auto",
        where: str = "image",
    ) -> Face:
        """The face in the model's frame.  ``landmarks`` None: from the face mesh; ``frame``: the
        (H, W) the landmarks refer to when not the image's own size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"{where}: expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}"
            )
        lm = (
            photo_landmarks(image, where)
            if landmarks is None
            else check_points(np.asarray(landmarks, np.float64), f"{where} landmarks", LANDMARKS)
        )
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
            face = Face(np.ascontiguousarray(image), face_edits.clip_to_frame(lm, self.size))
        else:
            face = Face(*frame_face(image, lm, self.size))
        if visible(face.landmarks).sum() < 20:
            raise InputError(f"{where}: fewer than 20 of the 68 landmarks lie inside the face frame")
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

    def sweep(
        self, face: Face, edit: str, base: Edits = Edits(), values: Sequence[float] | None = None
    ) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(strength, target landmarks, image) for ``edit`` at each strength, on top of ``base``."""
        if edit not in SWEEPS:
            raise InputError(f"--sweep {edit!r}: choose one of {', '.join(SWEEPS)}")
        values = SWEEPS[edit] if values is None else values
        targets = [target_landmarks(face.landmarks, base.with_value(edit, v), self.size) for v in values]
        return list(zip(values, targets, self.generate_many(face, targets)))


def sweep_sheet(
    face: Face, rows: list[tuple[float, np.ndarray, np.ndarray]], edit: str, scale: int = 3
) -> np.ndarray:
    """source | one cell per strength (generated face), captioned, as one uint8 image."""
    cells = [label(enlarge(face.image, scale), "source")]
    cells += [label(enlarge(img, scale), f"{edit} {v:+g}") for v, _, img in rows]
    pad = [np.pad(c, ((4, 4), (4, 4), (0, 0)), constant_values=255) for c in cells]
    return np.concatenate(pad, axis=1)


def face_input(image_path: str, landmarks: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """(image, landmarks, the frame they refer to) of a --image/--drive argument."""
    image = read_image(image_path)
    if landmarks == "auto":
        return image, photo_landmarks(image, image_path), None
    lm, frame = read_landmarks(landmarks)
    return image, lm, frame
