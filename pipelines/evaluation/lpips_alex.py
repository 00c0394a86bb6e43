"""LPIPS as the published tables compute it: the v0.1 "net-lin" model on AlexNet (GFLA's
``script/metrics.py`` builds ``PerceptualLoss(model='net-lin', net='alex')``).

Two files, given by path because nothing is downloaded: the torchvision AlexNet ImageNet state
dict (``alexnet-owt-7be5be79.pth``, keys ``features.*``) and the LPIPS linear layers
(``alex.pth`` of the ``lpips`` package's ``weights/v0.1``, keys ``lin0.model.1.weight`` …).  The
network is built here so that torchvision, which would pull another torch build, is not needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.metrics import sha256_file
from pipelines.evaluation.generators import EvaluationError

# torchvision's AlexNet ``features``; LPIPS taps the ReLU after each of the five convolutions.
_TAPS = (1, 4, 7, 9, 11)
_CHANNELS = (64, 192, 384, 256, 256)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
    )


def _load(path: str | None, what: str) -> dict:
    if not path or not Path(path).is_file():
        raise EvaluationError(
            f"{what}: no such file {path!r} (LPIPS-alex needs both files; nothing is downloaded)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever a bad file makes torch.load raise, said in one line
        raise EvaluationError(f"{what}: {path} is not a PyTorch state dict ({exc})") from None


class LpipsAlex:
    """Per-image LPIPS (net-lin, AlexNet, v0.1) of uint8 batches: inputs scaled to [-1, 1], the
    LPIPS scaling layer, unit-normalised features, learned channel weights, spatial mean, layers summed."""

    is_reference = True
    name = "alex"

    def __init__(self, alexnet_path: str, lin_path: str | None) -> None:
        state = _load(alexnet_path, "evaluate.lpips_alex_weights")
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        self.features = _alexnet_features().eval()
        try:
            self.features.load_state_dict(features, strict=True)
        except RuntimeError as exc:
            raise EvaluationError(
                f"evaluate.lpips_alex_weights: {alexnet_path} is not torchvision's AlexNet "
                f"({str(exc).splitlines()[0]})"
            ) from None
        lin = _load(lin_path, "evaluate.lpips_alex_lin_weights")
        assert lin_path is not None  # _load refuses a missing path
        self.lins = []
        for k, ch in enumerate(_CHANNELS):
            w = lin.get(f"lin{k}.model.1.weight")
            if w is None or tuple(w.shape) != (1, ch, 1, 1):
                raise EvaluationError(
                    f"evaluate.lpips_alex_lin_weights: {lin_path} lacks lin{k}.model.1.weight "
                    f"of shape (1, {ch}, 1, 1); expected the lpips package's weights/v0.1/alex.pth"
                )
            self.lins.append(w.double())
        self.shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        self.scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        self.weights_sha256 = f"{sha256_file(alexnet_path)}+{sha256_file(lin_path)}"

    @torch.no_grad()
    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images.float() / 127.5 - 1 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x.double())
        return out

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        layers = [_layer_distance(fa, fb, w) for fa, fb, w in zip(self._taps(a), self._taps(b), self.lins)]
        total = layers[0]
        for d in layers[1:]:
            total = total + d
        return total


def _layer_distance(fa: torch.Tensor, fb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # One tap of LpipsAlex.distance, [B].
    fa = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
    fb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
    return torch.nn.functional.conv2d((fa - fb).square(), w).mean(dim=(1, 2, 3))
