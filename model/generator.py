"""The generator: reference encoder, Deformation Estimation Module, Image Synthesis Module.

Data flow (strides are relative to the H×W input; every variant shares this code):

    source image + source pose --ReferenceEncoder--> neural textures   {2, 4, 8: [B,C_s,h_s,w_s]}
    target pose --SkeletonEncoder--> skeleton features                  {2, 4, 8}
    Deformation Estimation Module:
        FlowFieldEstimator(source image, source pose, target pose) -> flows {8, 4, 2: [B,2,h_s,w_s]}
        AttentionCorrelationEstimator(skeleton, textures)         -> attention warps {8, 4}
        CombinationMapGenerator(both warps, skeleton)             -> maps m {8, 4: [B,1,h_s,w_s]}
        combined = m·attention_warp + (1-m)·flow_warp (or whichever warp exists at that scale)
    SkeletonDecoder: bottleneck -> up, + skeleton skip, WarpBlock(combined) at each scale -> image
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.blocks import NEG_SLOPE, NormActConv, PyramidEncoder, ResBlock, Up, WarpBlock, conv3x3
from model.config import ModelConfig
from model.warp import attention_warp, flow_warp, resize_flow


@dataclass
class GeneratorOutput:
    """What the generator returns; dict keys are strides (8 = 1/8 scale), coarse to fine."""

    image: Tensor  # [B,3,H,W] in [-1,1]
    flows: dict[
        int, Tensor
    ]  # [B,2,h,w] pixels of that grid, (dx, dy): target (y,x) samples source (x+dx, y+dy)
    combination_maps: dict[int, Tensor]  # [B,1,h,w] in [0,1]: weight of the attention warp
    attn_warped: dict[int, Tensor]  # [B,C,h,w] source textures warped by attention
    flow_warped: dict[int, Tensor]  # [B,C,h,w] source textures warped by the flow
    attn_warped_image: dict[int, Tensor]  # [B,3,h,w] downsampled source image through the same attention
    flow_warped_image: dict[int, Tensor]  # [B,3,h,w] downsampled source image through the same flow
    query_attention: dict[int, Tensor] | None = None  # [B,Q,h,w] attention of the asked query points


def _small_init(conv: nn.Conv2d, std: float = 1e-3) -> nn.Conv2d:
    # Near-zero (not zero) heads start at the identity warp / an even mix while still passing
    # gradient to the layers below them from the first step.
    nn.init.normal_(conv.weight, std=std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def downsample_image(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-average ``image`` [B,C,H,W] to ``size`` (antialiased for non-integer factors)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)


# Flow field estimator: a U-Net on (source image, source pose, target pose) giving coarse-to-fine flows.
class FlowFieldEstimator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.scales = cfg.active_flow_scales  # coarse to fine
        self.depth = cfg.flow_depth
        strides = [2**i for i in range(1, int(math.log2(self.depth)) + 1)]
        widths = {s: cfg.flow_width(s) for s in strides}
        self.encoder = PyramidEncoder(3 + 2 * cfg.pose_channels, widths, 1, cfg.norm)
        self.decode_strides = [s for s in reversed(strides) if s >= min(self.scales)]
        self.ups = nn.ModuleDict(
            {str(s): Up(widths[2 * s], widths[s], cfg.norm) for s in self.decode_strides if s < self.depth}
        )
        self.blocks = nn.ModuleDict(
            {str(s): ResBlock(widths[s], widths[s], cfg.norm) for s in self.decode_strides if s < self.depth}
        )
        self.heads = nn.ModuleDict(
            {
                str(s): nn.Sequential(nn.LeakyReLU(NEG_SLOPE), _small_init(conv3x3(widths[s], 2)))
                for s in self.scales
            }
        )

    def forward(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> dict[int, Tensor]:
        feats = self.encoder(torch.cat([source_image, source_pose, target_pose], dim=1))
        x = feats[self.depth]
        flows: dict[int, Tensor] = {}
        coarser: Tensor | None = None
        for s in self.decode_strides:
            if s < self.depth:
                x = self.blocks[str(s)](self.ups[str(s)](x, feats[s].shape[-2:]) + feats[s])
            if s in self.scales:
                residual = self.heads[str(s)](x).float()  # flows stay float32: they are coordinates
                flows[s] = (
                    residual if coarser is None else resize_flow(coarser, residual.shape[-2:]) + residual
                )
                coarser = flows[s]
        return flows


# Attention correlation estimator: target-pose queries against source image+pose keys, softmax over
# all source positions, fused attention for the warp.
class AttentionCorrelationEstimator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.scales = cfg.active_attn_scales
        d = cfg.attn_dim
        widths = {s: cfg.width(s) for s in self.scales}
        self.query = nn.ModuleDict({str(s): nn.Conv2d(widths[s], d, 1) for s in self.scales})
        self.key = nn.ModuleDict({str(s): nn.Conv2d(widths[s], d, 1) for s in self.scales})
        # d-3 texture channels + the 3 image channels make the value exactly as wide as the key, which
        # is what the fused CPU kernel needs; the image rides along for free.
        self.value = nn.ModuleDict({str(s): nn.Conv2d(widths[s], d - 3, 1) for s in self.scales})
        self.out = nn.ModuleDict({str(s): nn.Conv2d(d - 3, widths[s], 1) for s in self.scales})
        self.log_inv_temperature = nn.Parameter(
            torch.full((len(self.scales),), -math.log(cfg.attn_temperature))
        )

    def queries_keys(self, s: int, skeleton: Tensor, textures: Tensor) -> tuple[Tensor, Tensor]:
        """Unit-norm keys [B,d,hs,ws] and queries scaled by the inverse temperature [B,d,h,w]."""
        i = self.scales.index(s)
        inv_t = self.log_inv_temperature[i].clamp(max=math.log(100.0)).exp()
        q = F.normalize(self.query[str(s)](skeleton), dim=1) * inv_t
        k = F.normalize(self.key[str(s)](textures), dim=1)
        return q, k

    def forward(
        self,
        s: int,
        skeleton: Tensor,
        textures: Tensor,
        source_image_s: Tensor,
        queries: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Warp ``textures`` [B,C,hs,ws] to the target grid of ``skeleton`` [B,C,h,w].

        Returns the warped textures [B,C,h,w], the warped image [B,3,h,w] and, when ``queries``
        [B,Q] (flat target positions) is given, their attention over the source [B,Q,hs,ws].
        """
        q, k = self.queries_keys(s, skeleton, textures)
        v = torch.cat([self.value[str(s)](textures), source_image_s.to(textures.dtype)], dim=1)  # [B,d,hs,ws]
        warped = attention_warp(q, k, v)  # [B,d,h,w]
        feats, image = warped[:, :-3], warped[:, -3:]
        query_attn = None
        if queries is not None:
            q_sel = torch.gather(q.flatten(2), 2, queries.unsqueeze(1).expand(-1, q.shape[1], -1))  # [B,d,Q]
            logits = torch.bmm(q_sel.transpose(1, 2).float(), k.flatten(2).float())  # [B,Q,hs*ws]
            query_attn = logits.softmax(-1).view(*queries.shape, *k.shape[-2:])
        return self.out[str(s)](feats), image, query_attn


# Combination map generator: per-pixel choice between the attention warp and the flow warp.
class CombinationMapGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.scales = tuple(s for s in cfg.active_attn_scales if s in cfg.active_flow_scales)
        self.nets = nn.ModuleDict(
            {
                str(s): nn.Sequential(
                    conv3x3(3 * cfg.width(s), cfg.combine_channels),
                    nn.LeakyReLU(NEG_SLOPE),
                    _small_init(conv3x3(cfg.combine_channels, 1)),
                )
                for s in self.scales
            }
        )

    def forward(self, s: int, attn: Tensor, flow: Tensor, skeleton: Tensor) -> Tensor:
        return torch.sigmoid(self.nets[str(s)](torch.cat([attn, flow, skeleton], dim=1)))  # [B,1,h,w]


# The full generator; which warps exist is decided by cfg.variant.
class AttnFlowGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.depth = cfg.depth
        self.strides = [2**i for i in range(1, int(math.log2(self.depth)) + 1)]  # 2 .. depth
        widths = {s: cfg.width(s) for s in self.strides}
        P = cfg.pose_channels
        # 1. Encoders.
        self.reference_encoder = PyramidEncoder(3 + P, widths, cfg.encoder_blocks, cfg.norm)
        self.skeleton_encoder = PyramidEncoder(P, widths, cfg.encoder_blocks, cfg.norm)
        self.bottleneck = nn.Sequential(
            *[
                ResBlock(widths[self.depth], widths[self.depth], cfg.norm)
                for _ in range(cfg.bottleneck_blocks)
            ]
        )
        # 2. Deformation Estimation Module (only the parts this variant uses).
        self.flow_estimator = FlowFieldEstimator(cfg) if cfg.uses_flow else None
        self.attention = AttentionCorrelationEstimator(cfg) if cfg.uses_attention else None
        self.combination = CombinationMapGenerator(cfg) if cfg.uses_attention and cfg.uses_flow else None
        # 3. Image Synthesis Module: skeleton decoder with warping blocks.
        extra = 3 if cfg.decoder_image else 0
        self.warp_blocks = nn.ModuleDict(
            {str(s): WarpBlock(widths[s], cfg.norm, extra) for s in cfg.warp_scales}
        )
        self.decoder_blocks = nn.ModuleDict(
            {
                str(s): nn.Sequential(
                    *[ResBlock(widths[s], widths[s], cfg.norm) for _ in range(cfg.decoder_blocks)]
                )
                for s in self.strides
            }
        )
        self.ups = nn.ModuleDict(
            {str(s): Up(widths[s], widths[s // 2] if s > 2 else cfg.width(1), cfg.norm) for s in self.strides}
        )
        self.full_head = (
            nn.Sequential(
                NormActConv(cfg.width(1) + P + (3 if cfg.image_skip else 0), cfg.width(1), cfg.norm),
                NormActConv(cfg.width(1), cfg.width(1), cfg.norm),
            )
            if cfg.full_resolution_head
            else None
        )
        head = NormActConv(cfg.width(1), 3, cfg.norm)
        self.to_image = nn.Sequential(head, nn.Tanh())
        if cfg.image_skip:  # start at the warped image itself
            conv = head[2]
            assert isinstance(conv, nn.Conv2d)
            _small_init(conv, std=1e-2)

    def _check_inputs(self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor) -> None:
        P = self.cfg.pose_channels
        if source_image.dim() != 4 or source_image.shape[1] != 3:
            raise ValueError(f"source_image must be [B,3,H,W], got {tuple(source_image.shape)}")
        b, _, h, w = source_image.shape
        for name, pose in (("source_pose", source_pose), ("target_pose", target_pose)):
            if tuple(pose.shape) != (b, P, h, w):
                raise ValueError(
                    f"{name} must be [B,{P},H,W] = {(b, P, h, w)} (model.pose_channels={P}), "
                    f"got {tuple(pose.shape)}"
                )
        if min(h, w) < 2 * self.depth:
            raise ValueError(f"input {h}×{w} is too small for a model whose deepest stride is {self.depth}")

    def flow_fields(
        self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor
    ) -> dict[int, Tensor]:
        """Only the flow field estimator (used by the flow warm-up)."""
        if self.flow_estimator is None:
            raise ValueError(f"model.variant {self.cfg.variant!r} has no flow field estimator")
        self._check_inputs(source_image, source_pose, target_pose)
        return self.flow_estimator(source_image, source_pose, target_pose)

    def _attend(
        self,
        s: int,
        skeleton: Tensor,
        tex: Tensor,
        image_s: Tensor,
        attn_queries: Tensor | None,
        image_size: tuple[int, int],
        b: int,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        q_idx = (
            None
            if attn_queries is None
            else self._query_indices(attn_queries.to(tex.device), skeleton.shape[-2:], image_size, b)
        )
        assert self.attention is not None  # only variants with attention attend
        return self.attention(s, skeleton, tex, image_s, q_idx)

    def attention_images(
        self, source_image: Tensor, source_pose: Tensor, target_pose: Tensor
    ) -> dict[int, Tensor]:
        """Only the encoders and the attention (used by the warm-up): the source image warped by the
        attention at each attention scale, {s: [B,3,h,w]}."""
        if self.attention is None:
            raise ValueError(f"model.variant {self.cfg.variant!r} has no attention")
        self._check_inputs(source_image, source_pose, target_pose)
        textures = self.reference_encoder(torch.cat([source_image, source_pose], dim=1))
        skeleton = self.skeleton_encoder(target_pose)
        images = {}
        for s in self.attention.scales:
            image_s = downsample_image(source_image, textures[s].shape[-2:])
            images[s] = self.attention(s, skeleton[s], textures[s], image_s)[1]
        return images

    def _query_indices(
        self, queries: Tensor, size: Sequence[int], image_size: tuple[int, int], b: int
    ) -> Tensor:
        # (x, y) pixels of the H×W image -> flat index on an h×w grid, [B,Q]
        if queries.dim() == 2:
            queries = queries.unsqueeze(0).expand(b, -1, -1)
        if queries.dim() != 3 or queries.shape[-1] != 2 or queries.shape[0] != b:
            raise ValueError(
                f"attn_queries must be [Q,2] or [B,Q,2] of (x, y) pixels, got {tuple(queries.shape)}"
            )
        (h, w), (H, W) = size, image_size
        x = (queries[..., 0] * w / W).floor().long().clamp(0, w - 1)
        y = (queries[..., 1] * h / H).floor().long().clamp(0, h - 1)
        return y * w + x

    def forward(
        self,
        source_image: Tensor,
        source_pose: Tensor,
        target_pose: Tensor,
        attn_queries: Tensor | None = None,
    ) -> GeneratorOutput:
        """source_image [B,3,H,W] in [-1,1], poses [B,P,H,W] in [0,1]; ``attn_queries`` [Q,2] or
        [B,Q,2] (x, y) pixel positions whose attention over the source is returned per scale."""
        self._check_inputs(source_image, source_pose, target_pose)
        b, _, H, W = source_image.shape
        cfg = self.cfg
        # 1. Neural textures of the source and features of the target skeleton.
        textures = self.reference_encoder(torch.cat([source_image, source_pose], dim=1))
        skeleton = self.skeleton_encoder(target_pose)
        # 2. Deformation estimation: warp the textures to the target at every warp scale.
        flows = self.flow_estimator(source_image, source_pose, target_pose) if self.flow_estimator else {}
        out = GeneratorOutput(
            image=source_image,
            flows=flows,
            combination_maps={},
            attn_warped={},
            flow_warped={},
            attn_warped_image={},
            flow_warped_image={},
            query_attention={} if attn_queries is not None and self.attention else None,
        )
        combined: dict[int, Tensor] = {}
        combined_image: dict[int, Tensor] = {}  # the source image warped like combined (decoder_image)
        for s in cfg.warp_scales:
            tex = textures[s]
            image_s = downsample_image(source_image, tex.shape[-2:])
            if cfg.variant == "baseline":
                combined[s], combined_image[s] = tex, image_s.to(tex.dtype)
                continue
            if s in flows:
                warped = flow_warp(torch.cat([tex, image_s.to(tex.dtype)], dim=1), flows[s])
                out.flow_warped[s], out.flow_warped_image[s] = warped[:, :-3], warped[:, -3:]
                combined[s], combined_image[s] = out.flow_warped[s], out.flow_warped_image[s]
            if self.attention is not None and s in self.attention.scales:
                feats, image, attn = self._attend(s, skeleton[s], tex, image_s, attn_queries, (H, W), b)
                out.attn_warped[s], out.attn_warped_image[s] = feats, image
                if attn is not None and out.query_attention is not None:  # both when queries are asked
                    out.query_attention[s] = attn
                combined[s], combined_image[s] = feats, image
            if self.combination is not None and s in self.combination.scales:
                m = self.combination(s, out.attn_warped[s], out.flow_warped[s], skeleton[s])
                out.combination_maps[s] = m
                combined[s] = m * out.attn_warped[s] + (1 - m) * out.flow_warped[s]
                combined_image[s] = m * out.attn_warped_image[s] + (1 - m) * out.flow_warped_image[s]
        if cfg.decoder_image:
            combined = {s: torch.cat([c, combined_image[s].to(c.dtype)], dim=1) for s, c in combined.items()}
        # 3. Image synthesis: decode the target skeleton, adding the aligned textures at each scale.
        x = self.bottleneck(skeleton[self.depth])
        for s in reversed(self.strides):
            if s < self.depth:
                x = self.ups[str(2 * s)](x, skeleton[s].shape[-2:]) + skeleton[s]
            if s in combined:
                x = self.warp_blocks[str(s)](x, combined[s])
            x = self.decoder_blocks[str(s)](x)
        x = self.ups["2"](x, (H, W))
        base = (
            self._skip_image(out, combined_image, source_image).clamp(-0.98, 0.98) if cfg.image_skip else None
        )
        if self.full_head is not None:
            seen = [x, target_pose.to(x.dtype)] + ([base.to(x.dtype)] if base is not None else [])
            x = x + self.full_head(torch.cat(seen, dim=1))
        if base is not None:
            # Logits of the finest combined warped image (upsampled): the decoder corrects it.
            logits = self.to_image[0](x)
            out.image = torch.tanh(logits + torch.atanh(base).to(logits.dtype))
        else:
            out.image = self.to_image(x)  # [B,3,H,W]
        return out

    def _skip_image(self, out: GeneratorOutput, combined_image: dict[int, Tensor], source: Tensor) -> Tensor:
        """The image_skip's starting image [B,3,H,W] (see ``model.skip_full_resolution``)."""
        size = source.shape[-2:]

        def up(x: Tensor) -> Tensor:
            return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)

        s = min(combined_image)
        if not (self.cfg.skip_full_resolution and s in out.flows):
            return up(combined_image[s])
        flowed = flow_warp(source.float(), resize_flow(out.flows[s].float(), (size[0], size[1])))
        if s not in out.combination_maps:
            return flowed
        m = up(out.combination_maps[s])
        return m * up(out.attn_warped_image[s]) + (1 - m) * flowed


def build_generator(cfg: ModelConfig) -> AttnFlowGenerator:
    """The generator for ``cfg.variant`` on the CPU in float32; move it with ``.to(device)``."""
    return AttnFlowGenerator(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
