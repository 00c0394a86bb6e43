"""The root config: one frozen dataclass per params.yaml section."""
from __future__ import annotations

from dataclasses import dataclass, field

from datasets.specs import DatasetSpec, PreprocessConfig, SynthesizeSpec
from pipelines.stage_configs import EvaluateConfig, RegisterConfig, TrainConfig

try:  # model/ is written alongside; keep the data stages usable while it is absent
    from model.config import LossConfig, ModelConfig, OptimConfig
except ImportError:  # pragma: no cover - only while model/config.py does not exist yet
    LossConfig = ModelConfig = OptimConfig = dict  # type: ignore[misc,assignment]


@dataclass(frozen=True)
class Config:
    datasets: dict[str, DatasetSpec]
    synthesize: dict[str, SynthesizeSpec] = field(default_factory=dict)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)

    def __post_init__(self) -> None:
        for name in self.synthesize:
            if name not in self.datasets:
                raise ValueError(f"synthesize.{name} has no entry in datasets")

    def dataset(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise KeyError(f"unknown dataset {name!r}; params.yaml datasets: {', '.join(sorted(self.datasets))}")
        return self.datasets[name]
