"""The generator under evaluation: from a training checkpoint or a model URI, rebuildable in a worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.export import pack_inputs
from model.generator import AttnFlowGenerator
from pipelines.evaluation.generated import load_generated
from pipelines.evaluation.naming import CONVENTIONS, FolderError
from pipelines.runs.source import GeneratorSource, SourceError
from pipelines.training.restore import load_checkpoint_generator, load_generator

GenerateFn = Callable[[dict[str, Any]], torch.Tensor]  # batch -> images [B,3,H,W] in [-1, 1], or uint8 pixels
# batch -> (images, located fields {name: [B,2,H,W]}, combination maps {stride: [B,1,H,W]}): see
# pipelines/evaluation/correspondence.py
FieldsFn = Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, torch.Tensor], dict[int, torch.Tensor]]]


class EvaluationError(RuntimeError):
    """Evaluation cannot run as asked; the message says why."""


@dataclass
class GeneratorUnderTest:
    fn: GenerateFn
    info: dict[str, Any]  # what was evaluated: checkpoint path/step/sha256 or model URI/version
    # How another process rebuilds the same generator: ("checkpoint", step folder) or ("model", URI).
    source: tuple[str, str] | None = None
    # The same images with the model's flows, attention locations and combination maps; None when
    # the generator does not expose them (a packed model returns images only).
    fields: FieldsFn | None = None
    # Images read from files: each goes through the feature network alone, as the real test images do.
    per_image: bool = False


def rebuild_generator(source: tuple[str, str]) -> GeneratorUnderTest:
    kind, where = source
    if kind == "checkpoint":
        return generator_from_checkpoint(where)[0]
    if kind == "model":
        return generator_from_model(where)
    if kind == "folder":
        return generator_from_folder(json.loads(where))
    raise EvaluationError(f"unknown generator source {kind!r}")


def generator_from_checkpoint(path: str | Path) -> tuple[GeneratorUnderTest, AttnFlowGenerator, dict]:
    """A checkpoint's EMA generator under test, the generator itself and the checkpoint's state."""
    try:
        loaded = load_checkpoint_generator(str(path))
    except SourceError as exc:
        raise EvaluationError(str(exc)) from None
    g, info, state = loaded.ema, loaded.info, loaded.state

    @torch.no_grad()
    def fn(batch: dict[str, Any]) -> torch.Tensor:
        return g(batch["source_image"], batch["source_pose"], batch["target_pose"]).image

    @torch.no_grad()
    def fields(batch: dict[str, Any]):
        from pipelines.evaluation.correspondence import forward_with_features, model_fields

        out, features = forward_with_features(g, batch)
        return (out.image, *model_fields(g, out, batch, features))

    return GeneratorUnderTest(fn, info, ("checkpoint", info["path"]), fields), g, state


def generator_from_model(uri: str) -> GeneratorUnderTest:
    try:
        loaded = load_generator(GeneratorSource.model(uri))
    except SourceError as exc:
        raise EvaluationError(str(exc)) from None
    net = loaded.as_packed()

    @torch.no_grad()
    def fn(batch: dict[str, Any]) -> torch.Tensor:
        return net(pack_inputs(batch["source_image"], batch["source_pose"], batch["target_pose"]))

    return GeneratorUnderTest(fn, loaded.info, ("model", uri))


def generator_from_folder(spec: dict[str, Any]) -> GeneratorUnderTest:
    """A "generator" that reads each pair's image from a folder of another method's outputs.

    ``spec``: ``folder``, ``convention`` (a key of naming.CONVENTIONS), ``resize`` (a policy of
    generated.RESIZE), ``size`` [height, width], ``files`` [[source, target, path], ...],
    ``images_sha256``; JSON, so that a worker process rebuilds the same generator from it."""
    conv = CONVENTIONS[spec["convention"]]
    size = tuple(spec["size"])
    files = {(s, t): Path(p) for s, t, p in spec["files"]}

    def fn(batch: dict[str, Any]) -> torch.Tensor:
        try:
            images = [
                load_generated(files[(s, t)], conv, spec["resize"], size)
                for s, t in zip(batch["source_name"], batch["target_name"])
            ]
        except FolderError as exc:  # changed on disk since it was checked
            raise EvaluationError(str(exc)) from None
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    info = {
        "source": "folder",
        "folder": spec["folder"],
        "convention": conv.name,
        "convention_written_by": f"{conv.method} ({conv.where})",
        "resize": spec["resize"],
        "images": len(files),
        "images_sha256": spec["images_sha256"],
    }
    return GeneratorUnderTest(fn, info, ("folder", json.dumps(spec)), per_image=True)
