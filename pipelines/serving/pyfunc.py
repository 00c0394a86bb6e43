"""The pyfunc form of a registered generator: a request DataFrame in, generated images out.

MLflow loads it through this module's :func:`_load_pyfunc` (the ``loader_module`` that
:mod:`pipelines.serving.flavor` writes into the python_function flavour); the PyTorch flavour of
the same model folder still loads the bare :class:`model.export.PackedGenerator`.  The columns are
:mod:`pipelines.serving.contract`'s; the work is :class:`PoseTransfer`'s and
:class:`PortraitEditor`'s, as for the CLIs.  A request the service cannot use raises
``MlflowException(INVALID_PARAMETER_VALUE)`` with a message naming the column, which the scoring
server answers as HTTP 400 ``{"error_code": "INVALID_PARAMETER_VALUE", "message": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.export import PackedGenerator, pack_inputs
from pipelines.apps.face_mesh import NoFaceFound, extract_landmarks
from pipelines.apps.inputs import InputError
from pipelines.apps.portrait_editor import Edits, PortraitEditor, target_landmarks
from pipelines.apps.pose_extract import NoPersonFound, PoseExtraMissing, extract_keypoints
from pipelines.apps.pose_transfer import Fit, PoseTransfer, combination_strip, to_pictures
from pipelines.serving.contract import (
    EDIT_COLUMNS,
    MAX_ROWS,
    POINT_COUNTS,
    PORTRAIT,
    POSE,
    RequestError,
    cell,
    check_columns,
    check_task,
    decode_flag,
    decode_float,
    decode_image,
    decode_points,
    decode_size,
    encode_png,
    task_for_channels,
)


def invalid(message: str) -> Exception:
    """The exception the scoring server turns into HTTP 400 with ``message``."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Job:
    """One request row ready for the generator: inputs in the model's frame."""

    image: np.ndarray  # RGB uint8 [h, w, 3]
    source_pose: torch.Tensor  # float32 [P, h, w] in [0, 1]
    target_pose: torch.Tensor
    maps: bool = False  # a pose row that asked for the combination maps

    @property
    def key(self) -> tuple:
        """Jobs with equal keys can share one forward pass."""
        return (self.image.shape, tuple(self.source_pose.shape))


Output = tuple[np.ndarray, "np.ndarray | None"]  # the picture, and the maps strip where asked


class GeneratorService:
    """One loaded generator answering request rows of its task.

    :meth:`predict` is parse (every row to a :class:`Job`, a bad value raising the 400), run (the
    generator on all jobs at once), answer (PNG).  ``runner`` is what runs the jobs: by default
    :meth:`forward` on this request's rows; a batching server sets it to a function that pools the
    jobs of concurrent requests into one forward pass (:mod:`pipelines.serving.ray_app`)."""

    def __init__(self, net: PackedGenerator, task: str) -> None:
        self.net = net.eval()
        self.task = check_task(task)
        self.size: tuple[int, int] = tuple(net.image_size)  # type: ignore[assignment]
        self.app = PoseTransfer(net) if task == POSE else PortraitEditor(net)
        self.runner: Callable[[list[Job]], list[Output]] | None = None

    def get_raw_model(self) -> PackedGenerator:
        """The tensor-level generator (``PyFuncModel.get_raw_model()``)."""
        return self.net

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Request rows (a DataFrame; in-process also one row as a dict) -> DataFrame ``image``."""
        jobs = self.parse(model_input)
        return self.answer(jobs, (self.runner or self.forward)(jobs))

    def parse(self, model_input: Any) -> list[Job]:
        """The request's rows as jobs; the first unusable value raises the 400 naming its column."""
        try:
            frame = as_frame(model_input)
            check_columns(list(frame.columns), self.task)
            rows = frame.to_dict("records")
            if not rows:
                raise RequestError("request", "request: no rows")
            if len(rows) > MAX_ROWS:
                raise RequestError("request", f"request: {len(rows)} rows exceed the {MAX_ROWS}-row limit")
        except RequestError as exc:
            raise invalid(str(exc)) from None
        jobs = []
        for i, row in enumerate(rows):
            try:
                jobs.append(self.pose(row) if self.task == POSE else self.portrait(row))
            except RequestError as exc:
                raise invalid(f"row {i}: {exc}" if len(rows) > 1 else str(exc)) from None
        return jobs

    @torch.no_grad()
    def forward(self, jobs: Sequence[Job]) -> list[Output]:
        """The generator on ``jobs``, one forward pass per input shape (all of them, for a model)."""
        results: list[Output | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.key, []).append(i)
        for members in groups.values():
            batch = [jobs[i] for i in members]
            x = torch.from_numpy(np.stack([j.image for j in batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
            sp, tp = torch.stack([j.source_pose for j in batch]), torch.stack([j.target_pose for j in batch])
            if any(j.maps for j in batch):
                out = self.net.generator(x, sp, tp)
                pictures, maps = to_pictures(out.image), out.combination_maps
            else:
                pictures, maps = to_pictures(self.net(pack_inputs(x, sp, tp))), None
            for k, (i, job) in enumerate(zip(members, batch)):
                results[i] = (pictures[k], combination_strip(maps, k, self.size) if job.maps else None)
        return results  # type: ignore[return-value]

    @staticmethod
    def answer(jobs: Sequence[Job], outputs: Sequence[Output]) -> pd.DataFrame:
        images = [encode_png(picture) for picture, _ in outputs]
        if any(job.maps for job in jobs):
            maps = [encode_png(strip) if strip is not None and strip.size else "" for _, strip in outputs]
            return pd.DataFrame({"image": images, "combination_maps": maps})
        return pd.DataFrame({"image": images})

    # Pose transfer -------------------------------------------------------------------------------

    def pose(self, row: dict[str, Any]) -> Job:
        """The row's inputs in the model's frame, and whether it asks for the combination maps."""
        app: PoseTransfer = self.app  # type: ignore[assignment]
        image = decode_image(cell(row, "source_image", required=True), "source_image")
        count = POINT_COUNTS[POSE]
        keypoints, photo = cell(row, "target_keypoints"), cell(row, "target_image")
        size = cell(row, "target_size")
        frame: tuple[int, int] | None
        if keypoints is not None and photo is not None:
            raise RequestError("target_image", "give target_keypoints or target_image, not both")
        if photo is not None:
            if size is not None:
                raise RequestError(
                    "target_size",
                    "target_image gives its own size; send target_size only with target_keypoints",
                )
            pose_photo = decode_image(photo, "target_image")
            target, frame = self._keypoints(pose_photo, "target"), (pose_photo.shape[0], pose_photo.shape[1])
        elif keypoints is not None:
            target = decode_points(keypoints, "target_keypoints", count)
            frame = decode_size(size) if size is not None else None
        else:
            raise RequestError("target_keypoints", "no value given (send target_keypoints or target_image)")
        maps = cell(row, "return_maps")
        want_maps = decode_flag(maps, "return_maps") if maps is not None else False
        given = cell(row, "source_keypoints")
        source = (
            decode_points(given, "source_keypoints", count) if given is not None else self._keypoints(image)
        )
        field = "target_image" if photo is not None else "target_keypoints"
        try:
            framed, src, tgt = app.prepare(image, target, frame, source_keypoints=source)
        except InputError as exc:  # the checks above leave only "no target keypoint inside the frame"
            raise RequestError(field, str(exc)) from None
        return Job(framed, app._pose(src), app._pose(tgt), bool(want_maps))

    @staticmethod
    def _keypoints(image: np.ndarray, which: str = "source") -> np.ndarray:
        """The pose of the person in the ``which`` photo (source_image or target_image), by the pose extra."""
        try:
            return extract_keypoints(image)
        except PoseExtraMissing:
            raise RequestError(
                f"{which}_keypoints",
                f"not given, and this server has no pose extra (mediapipe) "
                f"to find them in {which}_image: send {which}_keypoints (18 OpenPose-18 [x, y] "
                f"in {which}_image pixels)",
            ) from None
        except NoPersonFound as exc:
            raise RequestError(f"{which}_image", f"{exc}; send {which}_keypoints") from None

    # Portrait editing ----------------------------------------------------------------------------

    def portrait(self, row: dict[str, Any]) -> Job:
        editor: PortraitEditor = self.app  # type: ignore[assignment]
        count = POINT_COUNTS[PORTRAIT]
        image = decode_image(cell(row, "source_image", required=True), "source_image")
        given = cell(row, "source_landmarks")
        landmarks = decode_points(given, "source_landmarks", count) if given is not None else None
        target, size = cell(row, "target_landmarks"), cell(row, "target_size")
        edits = {name: decode_float(v, name) for name in EDIT_COLUMNS if (v := cell(row, name)) is not None}
        if target is not None and edits:
            raise RequestError(
                "target_landmarks", f"give target_landmarks or edit columns ({', '.join(edits)}), not both"
            )
        if size is not None and target is None:
            raise RequestError("target_size", "given without target_landmarks")
        points = decode_points(target, "target_landmarks", count) if target is not None else None
        frame = decode_size(size) if size is not None else self.size
        wanted = Edits()
        for name, value in edits.items():
            try:
                Edits().with_value(name, value).check(self.size, label=str)  # named as the columns
            except InputError as exc:
                raise RequestError(name, str(exc)) from None
            wanted = wanted.with_value(name, value)
        try:
            face = editor.prepare(
                image, self._landmarks(image) if landmarks is None else landmarks, where="source_image"
            )
        except InputError as exc:
            field = "source_image" if given is None else "source_landmarks"
            raise RequestError(field, str(exc).removeprefix("source_image: ")) from None
        if points is not None:
            target_points = Fit.between(frame, self.size).keypoints(points, self.size)
        else:
            try:
                target_points = target_landmarks(face.landmarks, wanted, self.size)
            except InputError as exc:
                raise RequestError(", ".join(edits) or "source_landmarks", str(exc)) from None
        return Job(face.image, editor._pose(face.landmarks), editor._pose(target_points))

    @staticmethod
    def _landmarks(image: np.ndarray) -> np.ndarray:
        try:
            return extract_landmarks(image)
        except PoseExtraMissing:
            raise RequestError(
                "source_landmarks",
                "not given, and this server has no pose extra (mediapipe) "
                "to find them in source_image: send source_landmarks (68 iBUG [x, y] in "
                "source_image pixels)",
            ) from None
        except NoFaceFound as exc:
            raise RequestError("source_image", f"{exc}; send source_landmarks") from None


def as_frame(model_input: Any) -> pd.DataFrame:
    """A DataFrame of request rows from what a caller hands ``predict``."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, Mapping) and not any(
        isinstance(v, (list, tuple, np.ndarray, pd.Series)) for v in model_input.values()
    ):
        return pd.DataFrame([dict(model_input)])  # one row as a dict of scalars
    try:
        return pd.DataFrame(model_input)
    except (ValueError, TypeError):
        raise RequestError("request", "request: expected a table of request rows") from None


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> GeneratorService:
    """MLflow's pyfunc loader: ``path`` is the model's ``data`` folder, beside its MLmodel."""
    import mlflow.pytorch

    root = Path(path).parent
    net = mlflow.pytorch.load_model(str(root), map_location="cpu")
    if not isinstance(net, PackedGenerator):
        raise invalid(f"{root}: not an AttnFlow generator (got {type(net).__name__})")
    task = (model_config or {}).get("task") or task_for_channels(net.pose_channels)
    return GeneratorService(net, task)
