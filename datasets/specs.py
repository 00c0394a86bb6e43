"""Typed params for the data stages: per-dataset entries, synthesis and preprocessing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of params.yaml ``datasets``: where the raw data lies and how to read it."""

    layout: Literal["deepfashion", "market", "portrait"]
    root: str  # raw data in the field's layout (synthetic sets are written here)
    image_size: tuple[int, int]  # (H, W) the pipeline works at
    source_size: tuple[int, int]  # (H, W) frame the annotation coordinates refer to
    shards: str  # output folder of the preprocess stage
    task: Literal["pose", "portrait"] = "pose"  # picks the keypoint scheme (datasets.pose.scheme)
    synthetic: bool = False  # True: pipelines.synthesize writes ``root``
    # σ in pixels of this dataset's pose maps; None: preprocess.heatmap_sigma (portrait part
    # maps are curves on a small face and want a thinner line than body joint heatmaps).
    pose_sigma: Optional[float] = None
    # ``section.key=value`` overrides every stage applies when it runs on this dataset, before
    # the command line's --set (e.g. model.pose_channels=8 for portraits, a training budget).
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pose_sigma is not None and not self.pose_sigma > 0:
            raise ValueError(f"pose_sigma must be > 0, got {self.pose_sigma}")
        for item in self.overrides:
            head = item.split("=", 1)[0]
            if "=" not in item or "." not in head or head.startswith("datasets."):
                raise ValueError(f"overrides: {item!r} must be section.key=value outside 'datasets'")


@dataclass(frozen=True)
class SynthesizeSpec:
    """One entry of params.yaml ``synthesize``: a generator run for a synthetic dataset."""

    generator: Literal["figure", "portrait"]
    seed: int = 0
    height: int = 128
    width: int = 88
    train_identities: int = 48
    test_identities: int = 8
    views_per_identity: int = 4
    background: Literal["plain", "gradient", "clutter"] = "gradient"
    jpeg_quality: int = 95
    file_prefix: str = "fasion"  # file names and CSV names: fasion-…, market-…, portrait-…
    # portrait generator only: head pose ranges (degrees) of the views
    max_yaw_deg: float = 30.0
    max_roll_deg: float = 15.0
    # Figure generator ("figure") options.
    patterns: tuple[Literal["hstripes", "vstripes", "checks", "dots"], ...] = (
        "hstripes", "vstripes", "checks", "dots")
    pattern_probability: float = 0.6  # share of tops (skirts a bit fewer, trousers rarely) with a pattern
    figure_scale: tuple[float, float] = (0.8, 0.9)  # standing height as a fraction of the image height
    crop_probability: float = 0.2  # share of front views framed as close-ups with the legs cut off
    blur_sigma: float = 0.0  # Gaussian blur of the finished image (low-resolution camera look)
    noise_std: float = 0.0  # sensor noise, in 0..255 grey levels
    supersample: int = 2  # render at this factor, then area-downsample (antialiasing)

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 16:
            raise ValueError(f"height/width must be at least 32x16, got {self.height}x{self.width}")
        if self.train_identities < 1 or self.test_identities < 1:
            raise ValueError("train_identities and test_identities must be >= 1")
        if self.views_per_identity < 2:
            raise ValueError("views_per_identity must be >= 2 (pairs are drawn within identities)")
        if not 0.0 <= self.max_yaw_deg <= 45.0 or not 0.0 <= self.max_roll_deg <= 45.0:
            raise ValueError(f"max_yaw_deg/max_roll_deg must be in [0, 45], got {self.max_yaw_deg}/{self.max_roll_deg}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.pattern_probability <= 1.0 or not 0.0 <= self.crop_probability <= 1.0:
            raise ValueError("pattern_probability and crop_probability must be in 0..1")
        lo, hi = self.figure_scale
        if not 0.3 <= lo <= hi <= 1.0:
            raise ValueError(f"figure_scale must be 0.3 <= low <= high <= 1.0, got {self.figure_scale}")
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError("blur_sigma and noise_std must be >= 0")
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"supersample must be in 1..4, got {self.supersample}")


@dataclass(frozen=True)
class PreprocessConfig:
    """params.yaml ``preprocess``: validation, pose heatmaps, face crops and shard writing."""

    heatmap_sigma: float = 3.0  # Gaussian σ in pixels of image_size
    shard_size: int = 64  # samples per shard
    jpeg_quality: int = 95
    face_size: int = 32  # face crops are face_size × face_size
    min_visible_joints: int = 4
    max_reject_fraction: float = 0.2  # stage fails when more of a split is rejected

    def __post_init__(self) -> None:
        if self.heatmap_sigma <= 0:
            raise ValueError(f"heatmap_sigma must be > 0, got {self.heatmap_sigma}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1 (samples per shard), got {self.shard_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.face_size < 4:
            raise ValueError(f"face_size must be >= 4 pixels, got {self.face_size}")
        if self.min_visible_joints < 0:
            raise ValueError(f"min_visible_joints must be >= 0, got {self.min_visible_joints}")
        if not 0.0 <= self.max_reject_fraction <= 1.0:
            raise ValueError(f"max_reject_fraction must be in [0, 1], got {self.max_reject_fraction}")
