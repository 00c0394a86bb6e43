"""Typed params for the data stages: per-dataset entries, synthesis and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    pose_sigma: float | None = None
    # Samples per shard of this dataset; None: preprocess.shard_size (a small set wants more,
    # smaller shards so that every rank and loader worker gets some).
    shard_size: int | None = None

    def __post_init__(self) -> None:
        if self.pose_sigma is not None and not self.pose_sigma > 0:
            raise ValueError(f"pose_sigma must be > 0, got {self.pose_sigma}")
        if self.shard_size is not None and self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1 (samples per shard), got {self.shard_size}")


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
    # portrait generator only: per training view, this many more renders of the same head pose
    # with one expression feature drawn again (a sitter keeping still while it moves), each paired
    # with its view both ways. The test split is left as it is.
    expression_twins: int = 0
    # Figure generator ("figure") options.
    patterns: tuple[Literal["hstripes", "vstripes", "checks", "dots"], ...] = (
        "hstripes",
        "vstripes",
        "checks",
        "dots",
    )
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
        if self.expression_twins < 0:
            raise ValueError(f"expression_twins must be >= 0, got {self.expression_twins}")
        if self.expression_twins and self.generator != "portrait":
            raise ValueError(
                "expression_twins is a portrait generator option (the figure generator has none)"
            )
        if not 0.0 <= self.max_yaw_deg <= 45.0 or not 0.0 <= self.max_roll_deg <= 45.0:
            raise ValueError(
                f"max_yaw_deg/max_roll_deg must be in [0, 45], got {self.max_yaw_deg}/{self.max_roll_deg}"
            )
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
    # Ray workers validating and writing shards (local Ray on 127.0.0.1 or RAY_ADDRESS); 0 runs
    # in this process without Ray. Never changes the output, so the manifest does not record it.
    workers: int = 0

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: in-process, no Ray), got {self.workers}")
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


@dataclass(frozen=True)
class PhotosSpec:
    """params.yaml ``prepare.<name>.photos``: a folder of one's own photos → a dataset (``--photos``)."""

    # Ordered pairs drawn within each identity: 0 = all V·(V-1), n > 0 = a seeded sample of n.
    pairs_per_identity: int = 0
    test_fraction: float = 0.25  # identities held out for the test split (at least one when > 0)
    seed: int = 0  # the identity split and the pair sample
    min_joints: int = 8  # fewer visible OpenPose-18 joints: quarantined ("too few joints")
    min_confidence: float = 0.5  # the detector's confidence below this: "no person"
    # A second person counts when found (with the first one masked out) at this confidence.
    second_person_confidence: float = 0.7
    margin: float = 0.1  # space around the person's joints, as a fraction of their box height

    def __post_init__(self) -> None:
        if self.pairs_per_identity < 0:
            raise ValueError(
                f"pairs_per_identity must be >= 0 (0: all ordered pairs), got {self.pairs_per_identity}"
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 1 <= self.min_joints <= 18:
            raise ValueError(f"min_joints must be in 1..18, got {self.min_joints}")
        for key in ("min_confidence", "second_person_confidence"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"margin must be in [0, 1], got {self.margin}")


@dataclass(frozen=True)
class PrepareSpec:
    """params.yaml ``prepare.<name>``: an official release (or a photo folder) → the field's layout.

    ``fit`` is how an image reaches the annotation frame (``datasets.<name>.source_size``):
    ``resize`` scales the whole image (what the field did to DeepFashion's 750×1101
    ``img_highres``, aspect 0.681 against the frame's 0.6875), ``crop`` cuts the centred box of
    the frame's aspect first (what the field did to the 256×256 ``img/`` release: columns
    40..216).  ``aspect_tolerance`` is the largest relative difference between an image's W/H and
    the frame's that the policy accepts; beyond it the image is rejected, never distorted.
    """

    fit: Literal["resize", "crop"] = "resize"
    aspect_tolerance: float = 0.02
    jpeg_quality: int = 95  # re-encoded images only; a JPEG already at the frame is copied byte for byte
    chunk_size: int = 256  # images per parallel task (the plan; never changes the output)
    include_query: bool = True  # Market-1501: query/ joins bounding_box_test/ in the test split
    photos: PhotosSpec = PhotosSpec()

    def __post_init__(self) -> None:
        if not 0.0 <= self.aspect_tolerance <= 1.0:
            raise ValueError(f"aspect_tolerance must be in [0, 1], got {self.aspect_tolerance}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
