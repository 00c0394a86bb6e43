"""AttnFlow model: generator, discriminators, losses and the GAN step (pure PyTorch, CPU and GPU).

Nothing here imports Ray, MLflow, DVC or WebDataset; see ``model.gan`` for the training step.
"""
from model.backbones import FeatureBackbone, build_backbone
from model.config import BACKBONES, VARIANTS, LossConfig, ModelConfig, OptimConfig
from model.discriminator import FaceDiscriminator, ResDiscriminator, build_discriminators
from model.gan import GanStep, prepare_module, unwrap
from model.generator import AttnFlowGenerator, GeneratorOutput, build_generator, count_parameters

__all__ = [
    "AttnFlowGenerator", "BACKBONES", "FaceDiscriminator", "FeatureBackbone", "GanStep", "GeneratorOutput",
    "LossConfig", "ModelConfig", "OptimConfig", "ResDiscriminator", "VARIANTS", "build_backbone",
    "build_discriminators", "build_generator", "count_parameters", "prepare_module", "unwrap",
]
