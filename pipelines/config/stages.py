"""Typed params of the train, evaluate and register stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class FaultInjection:
    """params.yaml ``train.faults`` (or ``ATTNFLOW_FAULTS``): test hooks, off (-1) by default."""

    raise_at_step: int = -1  # rank ``raise_rank`` raises before this step, once per run (a worker failure)
    raise_rank: int = 1
    kill_at_step: int = -1  # rank ``kill_rank`` SIGKILLs its own process before this step, once per run
    kill_rank: int = 1
    nan_at_step: int = -1  # rank ``nan_rank`` feeds a NaN batch at this step (a numerical fault)
    nan_rank: int = 1
    nan_steps: int = 1  # consecutive poisoned steps, to exercise ``max_consecutive_skips``


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml ``train``: the Ray Train stage (pipelines.train)."""

    dataset: str = "synthetic_fashion"
    workers: int = 2  # Ray Train workers; 0 runs the same loop in-process without Ray
    batch_size: int = 4  # per worker
    total_images: int = 640  # progress is counted in images, summed over workers; the make-run budget
    seed: int = 0
    run_name: str = ""  # "" → the dataset name; the same name resumes that run
    storage_path: str = "runs"  # checkpoints + summaries: local folder, shared filesystem or s3:// URL
    checkpoint_every_images: int = 1000
    keep_checkpoints: int = 2
    log_every_images: int = 64  # loss terms, images/s, skips, data errors → MLflow
    grid_every_images: int = 1000  # image grid PNG → runs/<run>/grids and MLflow
    max_failures: int = 3  # Ray FailureConfig: worker-group restarts from the last checkpoint
    max_consecutive_skips: int = 8  # non-finite steps in a row before the run stops with an error
    # Data-loading processes per training worker (0: decode in the worker); auto: 4 on a CUDA
    # worker (at most its CPUs), 0 on CPU (pipelines/training/loop.py loader_workers).
    loader_workers: int | Literal["auto"] = "auto"
    face_crops: bool = False  # decode the stored face crops into batches (the step cuts its own)
    # Parsed shards each loader process keeps from epoch to epoch (read, checked and parsed once;
    # the JPEGs are decoded at every visit); 0 re-reads every shard every epoch.
    shard_cache_mb: float = 64
    augment: bool = True  # flips (left/right joints swapped), small affine jitter
    # Share of training pairs whose target is the source view itself: half identical, half moved
    # by the augmentation's own draw (datasets/shards/augment.py). Needs augment.
    same_view_pairs: float = 0.0
    threads_per_worker: int = 1  # torch intra-op threads per worker on CPU
    # What every worker trains on (pipelines/training/placement.py): cuda asks Ray for
    # gpus_per_worker GPUs per worker and waits up to gpu_wait_s for them; auto is cuda only on a
    # local run on a machine with CUDA, never decided from what a cluster has at the time.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus_per_worker: float = 1.0
    gpu_wait_s: float = 900.0
    ray_address: str = ""  # "" → RAY_ADDRESS, else a local Ray started on 127.0.0.1
    mlflow_experiment: str = "attnflow"
    faults: FaultInjection = field(default_factory=FaultInjection)

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "total_images",
            "checkpoint_every_images",
            "keep_checkpoints",
            "log_every_images",
            "grid_every_images",
            "max_consecutive_skips",
            "threads_per_worker",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "loader_workers"):
            if getattr(self, name) != "auto" and getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.shard_cache_mb < 0:
            raise ValueError(f"train.shard_cache_mb must be >= 0, got {self.shard_cache_mb}")
        if not 0.0 <= self.same_view_pairs <= 1.0:
            raise ValueError(f"train.same_view_pairs must be in [0, 1], got {self.same_view_pairs}")
        if self.same_view_pairs > 0 and not self.augment:
            raise ValueError("train.same_view_pairs needs train.augment: true (it is a pair augmentation)")
        if self.gpus_per_worker <= 0 or self.gpu_wait_s < 0:
            raise ValueError(
                f"train.gpus_per_worker must be > 0 and train.gpu_wait_s >= 0, got "
                f"{self.gpus_per_worker} and {self.gpu_wait_s}"
            )
        if self.max_failures < -1:
            raise ValueError(f"train.max_failures must be >= -1 (-1: unlimited), got {self.max_failures}")
        if "/" in self.run_name or self.run_name.startswith("."):
            raise ValueError(f"train.run_name must be a plain folder name, got {self.run_name!r}")


@dataclass(frozen=True)
class AblationConfig:
    """ablation/params.yaml ``ablation``: the variants trained and evaluated
    (``python -m pipelines.ablation``; DVC stages ``ablation_run`` and ``ablation``).

    Every variant trains with the ``model``, ``loss``, ``optim`` and ``train`` sections of
    ablation/params.yaml (the budget is ``train.total_images``), on ``train.dataset``;
    the command line sets only ``model.variant`` and ``train.seed``.
    """

    variants: tuple[str, ...] = ("baseline", "attn", "flow", "no_face", "full")
    seeds: tuple[int, ...] = (0, 1)  # every variant is trained once per seed: the table's noise

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("ablation.variants must name at least one variant")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ablation.seeds must list distinct seeds, got {list(self.seeds)}")


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml ``evaluate``: the test-pair protocol of pipelines.evaluate.

    ``fid``/``lpips`` are reported only when the field's networks are given by path; otherwise the
    Fréchet and perceptual distances run on ``feature_backbone`` and are named for it.
    """

    batch_size: int = 8
    # Not the loss backbone (pipelines/evaluation/networks.py); vgg19 reads loss.vgg19_weights.
    feature_backbone: Literal["effnet_lite1", "effnet_lite0", "vgg19"] = "effnet_lite1"
    allow_loss_backbone: bool = (
        False  # score with the loss network's weights anyway (metrics named lossnet_*)
    )
    inception_weights: str | None = None  # FID Inception TorchScript (inception-2015-12-05.pt) -> fid, kid
    lpips_net: Literal["alex", "vgg"] = (
        "alex"  # alex: the field's tables (GFLA's net='alex') -> lpips; vgg -> lpips_vgg
    )
    lpips_alex_weights: str | None = None  # torchvision AlexNet state dict (alexnet-owt-7be5be79.pth)
    lpips_alex_lin_weights: str | None = (
        None  # LPIPS v0.1 linear layers (the lpips package's weights/v0.1/alex.pth)
    )
    lpips_vgg16_weights: str | None = (
        None  # LPIPS VGG16 TorchScript with its learned weights (vgg16.pt) -> lpips_vgg
    )
    kid_subsets: int = 100  # KID: mean and std of the unbiased MMD² over this many random subsets
    kid_subset_size: int = 1000  # rows per subset (capped at the smaller set)
    bootstrap_resamples: int = 2000  # 95% intervals of per-pair means and of paired differences
    seed: int = 0  # of the KID subsets and bootstrap resamples: the same scores give the same intervals
    masked_metrics: Literal["auto", "always", "never"] = "auto"  # auto: Market layouts, as the field reports
    mask_radius: float = 4.0  # half-width in pixels of PATN's limb mask
    grid_pairs: int = 8  # rows of the sample grid
    images_dir: str = "data/eval"  # generated test images: <images_dir>/<dataset>/<from>_2_<to>.png
    # The same images also copied under a published method's file names, for the field's scripts and
    # pipelines.score: <export_dir>/<dataset>/<convention>/ (pipelines/evaluation/naming.py); none: not.
    export_convention: Literal["none", "gfla", "nted", "pidm"] = "none"
    export_dir: str = "data/export"
    threads: int = 2  # torch intra-op threads (split between the worker processes)
    workers: int = 1  # processes scoring contiguous parts of the test pairs; scores do not depend on it

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "grid_pairs",
            "threads",
            "workers",
            "kid_subsets",
            "kid_subset_size",
            "bootstrap_resamples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"evaluate.{name} must be >= 1, got {getattr(self, name)}")
        if self.lpips_alex_weights and not self.lpips_alex_lin_weights:
            raise ValueError(
                "evaluate.lpips_alex_weights needs evaluate.lpips_alex_lin_weights (the LPIPS layers)"
            )
        if not self.mask_radius > 0:
            raise ValueError(f"evaluate.mask_radius must be > 0, got {self.mask_radius}")


@dataclass(frozen=True)
class RegisterConfig:
    """params.yaml ``register``: which metric decides the champion, where the model is logged."""

    primary_metric: str = "ssim"  # a key of metrics/<dataset>.json "model" (ssim, psnr, fd_*, lpd_*, fid, lpips; portraits also landmark_nme)
    model_name: str = ""  # "" -> by the dataset's task: attnflow-pose / attnflow-portrait
    rescore_champion: bool = True  # re-evaluate a champion scored under another protocol before comparing
    # beyond_baselines_and_champion: champion moves only when the paired bootstrap's 95% interval
    # (resampling identities) of the gain lies above zero over the champion AND over both baselines
    # (a first version: over both baselines); beyond_noise: over the champion only; any_gain: on
    # any gain in the primary metric.  A metric must be better beyond noise to be trusted.
    promotion_policy: Literal["any_gain", "beyond_noise", "beyond_baselines_and_champion"] = (
        "beyond_baselines_and_champion"
    )


@dataclass(frozen=True)
class ServeConfig:
    """params.yaml ``serve``: the Ray Serve application (``make serve-ray``, infra/rayservice.yaml)."""

    # Concurrent requests pooled into one generator pass, and how long the first one waits for
    # others: a batch amortises the per-pass overhead, the wait is paid by a lone request.
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    # Replicas under Ray Serve's autoscaler: it adds one when the requests in flight per replica
    # exceed target_ongoing_requests.  initial_replicas starts there instead of at the minimum.
    min_replicas: int = 1
    initial_replicas: int = 2
    max_replicas: int = 2
    target_ongoing_requests: float = 4.0
    max_ongoing_requests: int = 16  # per replica; more wait in the proxy's queue
    num_cpus_per_replica: float = 1.0  # Ray's CPU reservation per replica
    threads_per_replica: int = 1  # torch threads: replicas x threads should not exceed the cores
    alias_poll_s: float = 5.0  # how often each replica asks the registry where the alias points

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"serve.max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.batch_wait_timeout_s < 0:
            raise ValueError(f"serve.batch_wait_timeout_s must be >= 0, got {self.batch_wait_timeout_s}")
        if not 1 <= self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(
                "serve: need 1 <= min_replicas <= initial_replicas <= max_replicas, got "
                f"{self.min_replicas}, {self.initial_replicas}, {self.max_replicas}"
            )
        if self.threads_per_replica < 1 or self.max_ongoing_requests < 1 or self.alias_poll_s <= 0:
            raise ValueError(
                "serve.threads_per_replica and serve.max_ongoing_requests must be >= 1 and "
                "serve.alias_poll_s > 0"
            )
