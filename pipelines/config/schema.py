"""The root config: one frozen dataclass per params.yaml section."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets.specs import DatasetSpec, PrepareSpec, PreprocessConfig, SynthesizeSpec
from model.config import LossConfig, ModelConfig, OptimConfig
from pipelines.config.stages import AblationConfig, EvaluateConfig, RegisterConfig, ServeConfig, TrainConfig


@dataclass(frozen=True)
class PipelineConfig:
    """params.yaml ``pipeline``: which datasets each foreach stage of dvc.yaml runs over."""

    synthesize: tuple[str, ...] = ("synthetic_fashion", "synthetic_market")
    preprocess: tuple[str, ...] = ("synthetic_fashion", "synthetic_market")
    prepare: tuple[str, ...] = ()  # real datasets whose official release `prepare` converts


@dataclass(frozen=True)
class Config:
    datasets: dict[str, DatasetSpec]
    # Which profile the file is (params.yaml: cpu-default; profiles/*.yaml); tracked by the
    # training stages, so `dvc exp show` says which profile each experiment started from.
    profile: str = ""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    synthesize: dict[str, SynthesizeSpec] = field(default_factory=dict)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    prepare: dict[str, PrepareSpec] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)  # make serve-ray, infra/rayservice.yaml
    ablation: AblationConfig = field(default_factory=AblationConfig)  # ablation/params.yaml

    def __post_init__(self) -> None:
        for name in self.synthesize:
            if name not in self.datasets:
                raise ValueError(f"synthesize.{name} has no entry in datasets")
        for name in self.prepare:
            if name not in self.datasets:
                raise ValueError(f"prepare.{name} has no entry in datasets")
        for stage in ("synthesize", "preprocess", "prepare"):
            for name in getattr(self.pipeline, stage):
                if name not in self.datasets:
                    raise ValueError(f"pipeline.{stage} lists {name!r}, which has no entry in datasets")
        for name in self.pipeline.synthesize:
            if name not in self.synthesize:
                raise ValueError(f"pipeline.synthesize lists {name!r}, which has no entry in synthesize")
        for name in self.pipeline.prepare:
            if self.datasets[name].synthetic:
                raise ValueError(
                    f"pipeline.prepare lists {name!r}, a synthetic dataset (synthesize writes it)"
                )

    def dataset(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise KeyError(
                f"unknown dataset {name!r}; params.yaml datasets: {', '.join(sorted(self.datasets))}"
            )
        return self.datasets[name]
