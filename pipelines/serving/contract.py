"""What a served generator takes and answers: one request per row, every value a column.

Pose transfer (``attnflow-pose``):

==================  ========  ========  ==============================================================
column              type      required  value
==================  ========  ========  ==============================================================
source_image        string    yes       base64 PNG/JPEG (a ``data:`` URL is accepted), any size and
                                        mode up to :data:`MAX_SIDE` pixels a side and :data:`MAX_BYTES`
target_keypoints    string    yes [1]_  JSON ``[[x, y], ...]``: 18 OpenPose-18 points (``null`` or a
                                        negative coordinate marks a missing one)
target_size         string    no        JSON ``[H, W]``: the frame ``target_keypoints`` refer to; it is
                                        centre-cropped to the model's aspect ratio and scaled (default:
                                        the model's own frame)
source_keypoints    string    no        JSON, 18 points in ``source_image`` pixels; found with the pose
                                        extra (MediaPipe) when absent
target_image        string    no        instead of ``target_keypoints``: a base64 photo whose person's
                                        pose (found with the pose extra) is the target
return_maps         boolean   no        true: also answer ``combination_maps``
==================  ========  ========  ==============================================================

Portrait editing (``attnflow-portrait``): ``source_image`` as above; ``source_landmarks`` (JSON, 68
iBUG points in ``source_image`` pixels; found with the face mesh when absent); then either
``target_landmarks`` (JSON, 68 points in the output frame, or in ``target_size`` when given) or the
edit columns ``rotate`` (degrees), ``shift_x``/``shift_y`` (pixels of the output frame),
``mouth_open``, ``smile``, ``eyes_closed``, ``brows`` (numbers, ranges as in
:class:`pipelines.apps.portrait_editor.Edits`).  No edit and no target re-renders the face as it is.

.. [1] ``target_keypoints`` or ``target_image``, one of the two.

Both answer ``image``: the generated image as a base64 PNG of the model's size.  A pose request
with ``return_maps`` true also gets ``combination_maps``: a grey PNG strip, one cell per scale
(coarse to fine, each scaled to the model's size), white where the generator takes the
attention-warped features and black where it takes the flow-warped ones (empty for a variant
without both branches); rows that did not ask get an empty string.

Every function here is pure; a value it cannot use raises :class:`RequestError`, whose message
names the column (``target_keypoints: expected 18 [x, y] pairs, found 17``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets.pose.keypoints import NUM_JOINTS
from datasets.pose.landmarks import NUM_LANDMARKS, NUM_PARTS

# Limits on one request, in one place so a deployment can change them.
MAX_SIDE = 4096  # pixels, either side of a source image
MAX_BYTES = 20 * 1024 * 1024  # an image's encoded size
MAX_ROWS = 16  # requests in one call
MAX_FRAME = 65536  # a target_size side

POSE, PORTRAIT = "pose", "portrait"
TASKS = (POSE, PORTRAIT)
POINT_COUNTS = {POSE: NUM_JOINTS, PORTRAIT: NUM_LANDMARKS}
EDIT_COLUMNS = ("rotate", "shift_x", "shift_y", "mouth_open", "smile", "eyes_closed", "brows")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # an MLflow ColSpec type: "string" or "double"
    required: bool


INPUTS: dict[str, tuple[Column, ...]] = {
    POSE: (
        Column("source_image", "string", True),
        Column("target_keypoints", "string", False),
        Column("target_size", "string", False),
        Column("source_keypoints", "string", False),
        Column("target_image", "string", False),
        Column("return_maps", "boolean", False),
    ),
    PORTRAIT: (
        Column("source_image", "string", True),
        Column("source_landmarks", "string", False),
        Column("target_landmarks", "string", False),
        Column("target_size", "string", False),
        *(Column(name, "double", False) for name in EDIT_COLUMNS),
    ),
}
OUTPUTS = (Column("image", "string", True), Column("combination_maps", "string", False))


class RequestError(ValueError):
    """A request value the service cannot use; ``field`` is its column, the message starts with it
    (``field: message``, unless ``message`` already does)."""

    def __init__(self, field: str, message: str, *, prefix: bool = True) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if prefix and not message.startswith(field) else message)

    @classmethod
    def missing(cls, field: str) -> RequestError:
        return cls(field, f"missing column {field}", prefix=False)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    return task


def task_for_channels(pose_channels: int) -> str:
    """The task a generator's pose channels imply: the portrait part maps, else body keypoints."""
    return PORTRAIT if int(pose_channels) == NUM_PARTS else POSE


def is_missing(value: Any) -> bool:
    """An absent cell: None, NaN (how pandas fills a column some rows lack) or an empty string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    return isinstance(value, float) and math.isnan(value)


def cell(row: Mapping[str, Any], name: str, required: bool = False) -> Any:
    """The value of column ``name`` in one request row; None when absent and not required."""
    value = row.get(name)
    if is_missing(value):
        if required:
            raise RequestError.missing(name) if name not in row else RequestError(name, "no value given")
        return None
    return value


def check_columns(columns: list[str], task: str) -> None:
    """Raise for a required column a request lacks (unknown columns are left to the caller)."""
    for col in INPUTS[check_task(task)]:
        if col.required and col.name not in columns:
            raise RequestError.missing(col.name)
    if task == POSE and "target_keypoints" not in columns and "target_image" not in columns:
        raise RequestError(
            "target_keypoints",
            "missing column target_keypoints (or target_image, a photo of the target pose)",
            prefix=False,
        )


def decode_flag(value: Any, field: str) -> bool:
    """A yes/no column: true/false (JSON or a string), 1/0."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if _number(value) and float(value) in (0.0, 1.0):
        return bool(value)
    raise RequestError(field, f"expected true or false, got {str(value)[:40]!r}")


def decode_image(
    value: Any, field: str = "source_image", max_side: int = MAX_SIDE, max_bytes: int = MAX_BYTES
) -> np.ndarray:
    """A base64 PNG/JPEG -> RGB uint8 [H, W, 3] (alpha dropped, grey and palette expanded, 16-bit
    scaled to 8, EXIF orientation applied as photo viewers show it)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not isinstance(value, (str, bytes)):
        raise RequestError(field, f"expected a base64-encoded PNG/JPEG string, got {type(value).__name__}")
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())  # line breaks some encoders insert
    if len(text) * 3 // 4 > max_bytes:
        raise RequestError(field, f"{_amount(len(text) * 3 // 4)} exceeds the {_amount(max_bytes)} limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(field, "not valid base64") from None
    try:
        img: Image.Image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(field, "not a decodable PNG/JPEG") from None
    w, h = img.size
    if max(w, h) > max_side:
        raise RequestError(field, f"{w}x{h} exceeds the {max_side}-pixel limit")
    if min(w, h) < 1:
        raise RequestError(field, f"{w}x{h} is empty")
    try:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: keep the high byte
            grey = (np.asarray(img, np.int64) >> 8).clip(0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
        rgb = np.asarray(img.convert("RGB"), np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise RequestError(field, "not a decodable PNG/JPEG (truncated or corrupt)") from None
    return np.ascontiguousarray(rgb)


def _amount(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n} bytes"


def encode_png(image: np.ndarray) -> str:
    """RGB uint8 [H, W, 3] (or grey [H, W]) -> base64 PNG."""
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.ascontiguousarray(image, np.uint8)
    Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _json(value: Any, field: str) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return np.asarray(value, dtype=object).tolist()
    if not isinstance(value, str):
        raise RequestError(field, f"expected a JSON string, got {type(value).__name__}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RequestError(field, f"not valid JSON ({exc.msg} at character {exc.pos})") from None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def decode_points(value: Any, field: str, count: int) -> np.ndarray:
    """JSON ``[[x, y], ...]`` (exactly ``count`` pairs; ``null`` marks a missing point) -> float64
    [count, 2], missing points at -1."""
    doc = _json(value, field)
    if not isinstance(doc, list):
        raise RequestError(field, f"expected a JSON list of {count} [x, y] pairs, got {type(doc).__name__}")
    if len(doc) != count:
        raise RequestError(field, f"expected {count} [x, y] pairs, found {len(doc)}")
    out = np.full((count, 2), -1.0)
    for i, p in enumerate(doc):
        if p is None:
            continue
        if not (isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p)):
            raise RequestError(field, f"point {i} is not an [x, y] pair of numbers: {json.dumps(p)[:40]}")
        if not all(math.isfinite(v) for v in p):
            raise RequestError(
                field, f"point {i} is not finite (null or a negative coordinate marks a missing point)"
            )
        out[i] = p
    return out


def decode_size(value: Any, field: str = "target_size") -> tuple[int, int]:
    """JSON ``[H, W]`` -> (H, W), positive whole numbers up to :data:`MAX_FRAME`."""
    doc = _json(value, field)
    if not (
        isinstance(doc, list) and len(doc) == 2 and all(_number(v) and float(v).is_integer() for v in doc)
    ):
        raise RequestError(field, f"expected [H, W], two whole numbers, got {json.dumps(doc)[:40]}")
    h, w = int(doc[0]), int(doc[1])
    if not (0 < h <= MAX_FRAME and 0 < w <= MAX_FRAME):
        raise RequestError(field, f"[{h}, {w}] must lie in [1, {MAX_FRAME}] on each side")
    return h, w


def decode_float(value: Any, field: str) -> float:
    """A number column (a numeric string is accepted)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RequestError(field, f"expected a number, got {value[:40]!r}") from None
    if not _number(value) or isinstance(value, np.bool_):
        raise RequestError(field, f"expected a number, got {type(value).__name__}")
    return float(value)


def points_json(points: np.ndarray) -> str:
    """[N, 2] points -> the JSON the point columns take (missing points as null)."""
    pts = np.asarray(points, np.float64)
    return json.dumps(
        [None if (x < 0 or y < 0) else [round(float(x), 3), round(float(y), 3)] for x, y in pts]
    )


def example_request(
    task: str, image: np.ndarray, source_points: np.ndarray, target_points: np.ndarray
) -> dict[str, str]:
    """One request row from a pair already in the model's frame (the registration example)."""
    what = "keypoints" if check_task(task) == POSE else "landmarks"
    return {
        "source_image": encode_png(image),
        f"source_{what}": points_json(source_points),
        f"target_{what}": points_json(target_points),
    }


def request_signature(task: str) -> Any:
    """The task's column signature (an ``mlflow.models.ModelSignature``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    cols = INPUTS[check_task(task)]
    return ModelSignature(
        inputs=Schema([ColSpec(c.type, c.name, required=c.required) for c in cols]),
        outputs=Schema([ColSpec(c.type, c.name, required=c.required) for c in OUTPUTS]),
    )
