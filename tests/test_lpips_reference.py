"""LPIPS (net-lin, AlexNet, v0.1) against the reference ``lpips`` package on the same inputs and
the same weights (slow suite: it installs the package into a temporary folder).

The package is kept out of the project's environment: it imports torchvision, whose PyPI build
needs a CUDA torch (its operators fail to register on this CPU build). torchvision serves it only
the AlexNet layer layout, so the test gives it a stand-in module with that layout
(torchvision.models.alexnet's ``features``); the backbone weights are one state dict, in
torchvision's key names, loaded into both, and the learned layers are the package's own
``weights/v0.1/alex.pth``, read by both. Everything else (input scaling, the scaling layer,
channel normalisation, the linear layers, the spatial mean, the sum over layers) is the
package's code against ours.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.evaluation.lpips_alex import LpipsAlex

pytestmark = pytest.mark.slow

STANDIN = '''
"""Stand-in for torchvision in the lpips reference test: AlexNet's feature layer layout only."""
from torch import nn


class _AlexNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )


def alexnet(pretrained=False, **kwargs):
    if pretrained:
        raise RuntimeError("nothing is downloaded in this test")
    return _AlexNet()
'''

REFERENCE = '''
import json, sys
import numpy as np
import torch
import lpips

alexnet_path, images_path, out_path = sys.argv[1:4]
model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
state = torch.load(alexnet_path, map_location="cpu")
slices = {name: module for name, module in model.net.named_children() if name.startswith("slice")}
loaded = 0
for key, value in state.items():
    _, index, kind = key.split(".")
    for s in slices.values():
        if index in dict(s.named_children()):
            getattr(s, index).__getattr__(kind).data.copy_(value)
            loaded += 1
assert loaded == 10, loaded
data = np.load(images_path)
a, b = (torch.from_numpy(data[k]).float() / 127.5 - 1 for k in ("a", "b"))
with torch.no_grad():
    d = model(a, b).flatten().double().numpy()
json.dump({"lpips": d.tolist(), "lin_path": lpips.__file__}, open(out_path, "w"))
'''


def _alexnet_state(seed: int) -> dict:
    """Random AlexNet features in torchvision's key names (He-scaled, so activations stay alive)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for i, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"features.{i}.weight"] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    return state


@pytest.fixture(scope="module")
def reference_env(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("lpips-ref")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           "lpips==0.1.4"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (target / "torchvision").mkdir()
    (target / "torchvision/__init__.py").write_text("from . import models  # noqa: F401\n")
    (target / "torchvision/models.py").write_text(textwrap.dedent(STANDIN))
    return target


@pytest.mark.parametrize("seed", [0, 1])
def test_lpips_alex_matches_the_lpips_package(reference_env: Path, tmp_path: Path, seed: int) -> None:
    alexnet_path = tmp_path / "alexnet.pth"
    torch.save(_alexnet_state(seed), alexnet_path)
    lin_path = reference_env / "lpips/weights/v0.1/alex.pth"
    assert lin_path.is_file()
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (6, 3, 64, 48), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    b[0] = a[0]  # one identical pair: distance 0 in both
    np.savez(tmp_path / "images.npz", a=a, b=b)
    script = tmp_path / "reference.py"
    script.write_text(REFERENCE)
    out = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, str(script), str(alexnet_path), str(tmp_path / "images.npz"), str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(reference_env), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    expected = np.array(json.loads(out.read_text())["lpips"])

    ours = LpipsAlex(str(alexnet_path), str(lin_path)).distance(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert expected[0] == pytest.approx(0, abs=1e-7) and ours[0] == pytest.approx(0, abs=1e-7)
    assert expected[1:].min() > 1e-3  # real differences, not zeros compared
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
