"""Compact loader batches -> the model's float batch, on the training device.

The loader's workers send compact batches (``PairLoader(compact=True)``): uint8 NHWC
images, keypoints, and pose maps either as nothing at all (``poses="keypoints"``:
Gaussian body heatmaps, rendered here from the keypoints) or as sparse uint8
patches (``poses="sparse"``: any scheme, pasted here).  This module copies them to
the device (pinned memory and ``non_blocking`` on CUDA, one batch ahead on a side
stream: :class:`DeviceBatches`) and expands them there with batched tensor ops:

* images: ``uint8 · (2/255) − 1`` in float32, the same two roundings as
  :func:`datasets.shards.loader.finalise`, so equal bit for bit;
* Gaussian pose maps (:func:`render_gaussians`): the same float64 1-D Gaussians
  as :func:`datasets.pose.heatmaps.render_sparse`, cast to float32, multiplied,
  quantised ``floor(255·v + 0.5)`` and scaled by ``1/255`` — the CPU patches
  exactly, up to the last bit of the device's float64 ``exp`` (tested within 1e-6);
* sparse patches (:func:`paste_sparse`): scattered as ``v/255``, bit for bit.

Only patch pixels are computed and written (K·(2r+1)² per image, ~4k at σ=3
instead of K·H·W = 200k at 128×88): the dense output is one zeroed allocation
plus one scatter, so the cost does not grow with H×W.  Pixels outside the frame
are sent to one spare element past the end of the output (a scatter without a
boolean mask, hence no host synchronisation on CUDA). On a CPU device the Gaussian maps
are rendered by :mod:`datasets.pose.cpu_render` instead: there these eager ops and the
fresh zeroed output cost several JPEG decodes per image, a compiled loop into reused
buffers about a fifth of one (``python -m pipelines.bench data``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from datasets.pose import heatmaps
from datasets.pose.keypoints import MISSING

PoseMode = Literal["keypoints", "sparse"]
_INV255 = float(np.float32(1.0 / 255.0))
_TWO_OVER_255 = float(np.float32(2.0 / 255.0))


def _zeros(numel: int, device: torch.device) -> torch.Tensor:
    # On CPU a calloc'd numpy buffer: pages no patch touches are zeroed by the kernel when
    # the model first reads them, not by a memset here (what finalise's np.zeros does too).
    if device.type == "cpu":
        return torch.from_numpy(np.zeros(numel, np.float32))
    return torch.zeros(numel, dtype=torch.float32, device=device)


def _scatter(
    values: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    plane: torch.Tensor,
    shape: tuple[int, int, int, int],
) -> torch.Tensor:
    """values [N,S,S] at rows [N,S,1] / cols [N,1,S] of plane [N] (= b·K + k) -> dense [B,K,H,W]."""
    b, k, h, w = shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    spare = b * k * h * w
    index = torch.where(inside, plane.view(-1, 1, 1) * (h * w) + rows * w + cols, spare)
    out = _zeros(spare + 1, values.device)
    # Every in-frame index is unique (one patch per channel, distinct pixels); the spare
    # element collects the rest and is cut off below.
    # scatter_, not index_put_: the latter measured ~100x slower on the CPU for this.
    out.scatter_(0, index.reshape(-1), torch.where(inside, values, 0.0).reshape(-1))
    return out[:spare].view(b, k, h, w)


def render_gaussians(keypoints: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """float32 [B,K,2] keypoints (x, y; -1 missing) -> float32 [B,K,H,W] quantised heatmaps.

    Equals pasting :func:`heatmaps.render_sparse` patches (``v/255``) on the CPU.
    """
    b, k, _ = keypoints.shape
    h, w = size
    r = heatmaps.patch_radius(sigma)
    kp = keypoints.reshape(-1, 2)
    x, y = kp[:, 0].to(torch.float64), kp[:, 1].to(torch.float64)
    visible = (kp[:, 0] != MISSING) & (kp[:, 1] != MISSING)
    visible &= (x > -r - 1) & (x < w + r) & (y > -r - 1) & (y < h + r)  # else no pixel in frame
    offs = torch.arange(2 * r + 1, dtype=torch.float64, device=kp.device)
    px = torch.round(x).unsqueeze(1) - r + offs  # [N,S] pixel columns (round: half to even, as np.rint)
    py = torch.round(y).unsqueeze(1) - r + offs
    denom = 2 * sigma**2
    gx = torch.exp(-((px - x.unsqueeze(1)) ** 2) / denom).to(torch.float32)
    gy = torch.exp(-((py - y.unsqueeze(1)) ** 2) / denom).to(torch.float32)
    product = gy.unsqueeze(2) * gx.unsqueeze(1)
    # quantise: uint8(v·255 + 0.5) with both roundings in float32, then the loader's v/255.
    levels = (product * 255.0 + 0.5).to(torch.uint8)
    values = levels.to(torch.float32) * _INV255
    # A hidden joint's patch is moved off the frame (row -1): the scatter drops it.
    rows = torch.where(visible.view(-1, 1, 1), py.to(torch.int64).unsqueeze(2), -1)
    cols = px.to(torch.int64).unsqueeze(1)
    plane = torch.arange(b * k, device=kp.device)
    return _scatter(values, rows, cols, plane, (b, k, h, w))


def paste_sparse(packed: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
    """A :func:`heatmaps.pack`-ed batch (as tensors on the device) -> float32 [B,K,H,W] of v/255."""
    k, h, w, s = (int(v) for v in packed["shape"])  # kept on the host by to_device
    counts = packed["counts"]
    owner = torch.repeat_interleave(
        torch.arange(batch, device=counts.device), counts, output_size=int(packed["channels"].shape[0])
    )  # no device sync
    plane = owner * k + packed["channels"]
    offs = torch.arange(s, device=counts.device)
    rows = (packed["origins"][:, 0:1] + offs).unsqueeze(2)
    cols = (packed["origins"][:, 1:2] + offs).unsqueeze(1)
    values = packed["patches"].to(torch.float32) * _INV255
    return _scatter(values, rows, cols, plane, (batch, k, h, w))


def to_float_image(nhwc: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float32 [B,3,H,W] in [-1, 1], rounding exactly as the CPU loader does."""
    if nhwc.device.type == "cpu":
        from datasets.shards.loader import cpu_float_image

        return cpu_float_image(nhwc.numpy())
    return nhwc.permute(0, 3, 1, 2).to(torch.float32).mul_(_TWO_OVER_255).sub_(1.0).contiguous()


@dataclass
class Expander:
    """What a compact batch needs to become the model's batch (from the shards' manifest).

    On a CPU device the Gaussian maps come from :class:`datasets.pose.cpu_render.GaussianCanvas`
    and the images from :class:`datasets.shards.cpu_images.ImageConverter` (compiled loops
    into reused buffers, one per role), the same values bit for bit.
    """

    poses: PoseMode
    pose_channels: int
    size: tuple[int, int]
    sigma: float
    canvases: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    converters: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def image(self, role: str, nhwc: torch.Tensor) -> torch.Tensor:
        if nhwc.device.type != "cpu":
            return to_float_image(nhwc)
        if role not in self.converters:
            from datasets.shards.cpu_images import ImageConverter

            self.converters[role] = ImageConverter()
        return self.converters[role](nhwc)

    def render(self, role: str, keypoints: torch.Tensor) -> torch.Tensor:
        if keypoints.device.type != "cpu":
            return render_gaussians(keypoints, self.size, self.sigma)
        if role not in self.canvases:
            from datasets.pose.cpu_render import GaussianCanvas

            self.canvases[role] = GaussianCanvas(self.size, self.sigma)
        return self.canvases[role](keypoints)

    @classmethod
    def of_loader(cls, loader: Any) -> Expander:
        pre = loader.manifest["preprocess"]
        return cls(
            loader.poses,
            loader.pose_channels,
            tuple(loader.manifest["image_size"]),
            float(pre["heatmap_sigma"]),
        )

    def __call__(self, moved: dict[str, Any]) -> dict[str, Any]:
        """A compact batch already on the device -> the float batch (keys as ``finalise``)."""
        b = int(moved["source_rgb"].shape[0])
        poses = {}
        for role in ("source", "target"):
            if self.poses == "keypoints":
                poses[role] = self.render(role, moved[f"{role}_keypoints"])
            else:
                poses[role] = paste_sparse(moved[f"{role}_pose_sparse"], b)
        batch = {
            "source_image": self.image("source", moved["source_rgb"]),
            "target_image": self.image("target", moved["target_rgb"]),
            "source_pose": poses["source"],
            "target_pose": poses["target"],
            "target_face_box": moved["target_face_box"],
            "target_face_valid": moved["target_face_valid"],
            "source_keypoints": moved["source_keypoints"],
            "target_keypoints": moved["target_keypoints"],
            "source_name": list(moved["source_name"]),
            "target_name": list(moved["target_name"]),
        }
        if "face_rgb" in moved:  # only when the loader was asked for face crops
            batch["target_face"] = self.image("face", moved["face_rgb"])
        return batch


def to_device(compact: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """numpy arrays (also inside the packed pose dicts) -> tensors on ``device``.

    On CUDA through pinned host memory with ``non_blocking``: the copy is queued on the
    current stream and the host goes on. Other values (names) pass through.
    """
    cuda = device.type == "cuda"

    def move(v: Any) -> Any:
        if isinstance(v, dict):  # a packed pose batch: its shape and sigma are read on the host
            return {k: x if k in ("shape", "sigma") else move(x) for k, x in v.items()}
        if not isinstance(v, np.ndarray):
            return v
        t = torch.from_numpy(v)
        return t.pin_memory().to(device, non_blocking=True) if cuda else t

    return {k: move(v) for k, v in compact.items()}


class DeviceBatches:
    """Compact batches -> float batches on ``device``, the next one's copy already under way.

    On CUDA batch n+1 is pinned and copied on a side stream before batch n is handed
    to the step, so the copy overlaps the step's kernels; the step's stream waits for
    the copy (``wait_stream``) and owns the tensors after it (``record_stream``). On the
    CPU the same order of work runs without streams (the copies are no-ops).
    """

    def __init__(
        self, source: Iterable[dict[str, Any]], device: torch.device, expand: Expander, profile: bool = False
    ) -> None:
        self.source, self.device, self.expand = source, device, expand
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        # profile: the copy and the expansion each end with a device synchronisation and their
        # seconds are summed here (the benchmark's step-time breakdown; it removes the overlap).
        self.seconds: dict[str, float] | None = {"h2d": 0.0, "expand": 0.0} if profile else None

    def _timed(self, name: str, fn: Any, *args: Any) -> Any:
        if self.seconds is None:
            return fn(*args)
        t0 = time.perf_counter()
        out = fn(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[name] += time.perf_counter() - t0
        return out

    def _start(self, compact: dict[str, Any] | None) -> dict[str, Any] | None:
        if compact is None:
            return None
        if self.stream is None:
            return self._timed("h2d", to_device, compact, self.device)
        with torch.cuda.stream(self.stream):
            return self._timed("h2d", to_device, compact, self.device)

    def _ready(self, moved: dict[str, Any]) -> dict[str, Any]:
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for t in _tensors(moved):
                t.record_stream(current)
        return self._timed("expand", self.expand, moved)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.source)
        ahead = self._start(next(it, None))
        while ahead is not None:
            current = ahead
            ahead = self._start(next(it, None))  # prefetch: queued before the step uses `current`
            yield self._ready(current)


def _tensors(tree: Any) -> Iterator[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _tensors(v)
