"""The pixels of a generated image file as the protocol scores them: decoded as the test shards'
targets are (OpenCV, so a byte-identical copy of a target decodes to the same pixels), the declared
panel cut out of a strip, and brought to the dataset's size by a declared policy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipelines.evaluation.naming import Convention, FolderError

# What each policy does to an image whose size is not the dataset's (one that is passes unchanged).
RESIZE = {
    "none": "refused: every image must have the dataset's size",
    "bicubic": "resized to the dataset's size, PIL bicubic (antialiased, as CFLD's torch bicubic antialias=True "
    "from its square output to 256x176)",
    "bilinear": "resized to the dataset's size, PIL bilinear (antialiased)",
    "area": "resized to the dataset's size, OpenCV INTER_AREA (as preprocessing brings a photo to the frame)",
    "center-crop": "the centre of the dataset's size cut out (an output padded to a square), refused when smaller",
}
PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FolderError(f"{path}: cannot be read ({exc.strerror})") from None


def decode_rgb(data: bytes, path: Path) -> np.ndarray:
    """H×W×3 uint8 RGB of an image file's bytes, as the shards' JPEGs are decoded (alpha dropped, grey to RGB)."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise FolderError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cut_panel(rgb: np.ndarray, conv: Convention, path: Path) -> np.ndarray:
    if conv.panels == 1:
        return rgb
    width = rgb.shape[1]
    if width % conv.panels:
        raise FolderError(
            f"{path}: {width} px wide, not {conv.panels} panels side by side as {conv.method} writes"
        )
    w = width // conv.panels
    return rgb[:, conv.panel * w : (conv.panel + 1) * w]


def fit(rgb: np.ndarray, size: tuple[int, int], policy: str, path: Path) -> np.ndarray:
    """``rgb`` at ``size`` (height, width) by ``policy`` (a key of RESIZE)."""
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    got = f"{rgb.shape[0]}x{rgb.shape[1]}"
    if policy == "none":
        raise FolderError(
            f"{path}: {got}, the dataset's images are {h}x{w}; --resize bicubic stretches it to "
            f"{h}x{w} (as CFLD brings square outputs to 256x176), center-crop cuts the centre out"
        )
    if policy == "center-crop":
        if rgb.shape[0] < h or rgb.shape[1] < w:
            raise FolderError(f"{path}: {got} is smaller than the dataset's {h}x{w}: nothing to crop")
        top, left = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
        return np.ascontiguousarray(rgb[top : top + h, left : left + w])
    if policy == "area":
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    if policy in PIL_FILTERS:
        return np.asarray(Image.fromarray(rgb).resize((w, h), PIL_FILTERS[policy]))
    raise FolderError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE)}")


def load_generated(
    path: Path, conv: Convention, policy: str, size: tuple[int, int], data: bytes | None = None
) -> np.ndarray:
    data = read_bytes(path) if data is None else data
    return fit(cut_panel(decode_rgb(data, path), conv, path), size, policy, path)


def check_all(paths: list[Path], conv: Convention, policy: str, size: tuple[int, int]) -> str:
    """Decode and fit every file once before anything is scored (the first bad one is named);
    returns the sha256 over the files' sha256 in the given order: which images were scored."""
    digest = hashlib.sha256()
    for path in paths:
        data = read_bytes(path)
        load_generated(path, conv, policy, size, data)
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()
