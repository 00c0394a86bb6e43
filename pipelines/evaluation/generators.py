"""The generator under evaluation: from a training checkpoint or a model URI, rebuildable in a worker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from model.export import pack_inputs
from pipelines.tracking.models import ModelLoadError, load_packed
from pipelines.training.restore import CheckpointError, ema_generator, load_checkpoint

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
    raise EvaluationError(f"unknown generator source {kind!r}")


def generator_from_checkpoint(path: str | Path) -> tuple[GeneratorUnderTest, torch.nn.Module, dict]:
    try:
        state, info = load_checkpoint(path)
    except CheckpointError as exc:
        raise EvaluationError(str(exc)) from None
    g, mcfg = ema_generator(state)
    info["variant"] = mcfg.variant

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
        net = load_packed(uri)
    except ModelLoadError as exc:
        raise EvaluationError(str(exc)) from None

    @torch.no_grad()
    def fn(batch: dict[str, Any]) -> torch.Tensor:
        return net(pack_inputs(batch["source_image"], batch["source_pose"], batch["target_pose"]))

    return GeneratorUnderTest(fn, {"source": "model", "uri": uri}, ("model", uri))
