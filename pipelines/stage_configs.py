"""Typed params of the train, evaluate and register stages."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml ``train``."""

    dataset: str = "synthetic_fashion"
    workers: int = 2  # Ray Train workers; 0 runs the same loop in-process without Ray
    batch_size: int = 4  # per worker
    total_images: int = 4000  # progress is counted in images, across workers
    seed: int = 0


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml ``evaluate``."""

    batch_size: int = 8


@dataclass(frozen=True)
class RegisterConfig:
    """params.yaml ``register``."""

    primary_metric: str = "ssim"
