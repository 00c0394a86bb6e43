"""The plain-PyTorch GAN step: generator and discriminator phases, fault skipping, EMA, warm-up.

One :meth:`GanStep.step` is, in order:
  1. Gmain: G forward, every generator term (D is only read: its forward runs under ``no_sync``
     and the gradient it receives is discarded), weighted sum, backward.
  2. Dmain (+ Dreg every ``loss.r1_every`` steps): D on [real, fake.detach()] in one forward
     (so DDP sees one forward per backward), face D on face crops, backward.
  3. Fault check: if any loss or gradient is non-finite on any rank (a MAX all-reduce of one flag
     when ``torch.distributed`` is initialised), nobody updates and the EMA is untouched.
  4. Optimiser steps, then the EMA of G.
Both optimiser updates use gradients computed from the same pre-update weights, as in StyleGAN's
phase loop. G and D may each be wrapped in DistributedDataParallel (separately) before they are
passed in; call :func:`prepare_module` on them before wrapping.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from model.backbones import FeatureBackbone, build_backbone
from model.compiled import maybe_compile, should_compile
from model.config import LossConfig, ModelConfig, OptimConfig
from model.discriminator import FaceDiscriminator
from model.generator import AttnFlowGenerator, GeneratorOutput
from model.losses import (
    attention_reconstruction_loss,
    change_weighted_l1,
    content_loss,
    flow_regularization_loss,
    l1_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    masked_mean,
    pose_weighted_l1,
    r1_penalty,
    sampling_correctness_loss,
    style_loss,
    sum_terms,
)

BATCH_KEYS = ("source_image", "source_pose", "target_image", "target_pose")
FACE_KEYS = ("target_face_box", "target_face_valid")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif isinstance(orig := getattr(module, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            module = orig
        else:
            return module


def unwrap_as(module: nn.Module, kind: type[ModuleT]) -> ModuleT:
    """:func:`unwrap`, checked to be a ``kind``."""
    inner = unwrap(module)
    if not isinstance(inner, kind):
        raise TypeError(f"expected a {kind.__name__} (possibly wrapped), got {type(inner).__name__}")
    return inner


def prepare_module(module: ModuleT, device: torch.device | str, optim_cfg: OptimConfig) -> ModuleT:
    """Move ``module`` to ``device`` and, on CUDA with ``optim.channels_last``, to channels-last
    memory. Call before wrapping in DDP (its gradient buckets follow the parameter layout)."""
    device = torch.device(device)
    module = module.to(device)
    if device.type == "cuda" and optim_cfg.channels_last:
        # Module.to takes memory_format (it parses its arguments as Tensor.to does); torch's
        # overloads of it leave the keyword out.
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return module


def _no_sync(module: nn.Module | None):
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


def _grad_norm(params: list[nn.Parameter], clip: float) -> Tensor:
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return torch.zeros(())
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(with_grad, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def ema_decay_at(step: int, decay: float, start: int = 0) -> float:
    """EMA decay for update number ``step`` (0-based): 0 before ``start``, then min(decay, (1+n)/(10+n)).

    The warm-up bound (TensorFlow's ExponentialMovingAverage ``num_updates``) keeps a short run's
    EMA from being mostly the random initialisation: with a flat 0.999, 80 steps leave 92% of it.
    """
    if step < start:
        return 0.0
    n = step - start
    return min(decay, (1.0 + n) / (10.0 + n))


# One GAN training step over a dict batch; holds the optimisers, the EMA of G and the skip counters.
class GanStep:
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        face_discriminator: nn.Module | None,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig = LossConfig(),
        optim_cfg: OptimConfig = OptimConfig(),
        backbone: FeatureBackbone | None = None,
    ):
        """``generator``/``discriminator``/``face_discriminator`` already on their device (and
        optionally DDP-wrapped); ``backbone`` defaults to ``build_backbone(loss_cfg)``."""
        if model_cfg.uses_face != (face_discriminator is not None):
            raise ValueError(
                f"model.variant {model_cfg.variant!r} {'needs' if model_cfg.uses_face else 'has no'} "
                "face discriminator; build both with model.build_discriminators(cfg)"
            )
        self.model_cfg, self.loss_cfg, self.optim_cfg = model_cfg, loss_cfg, optim_cfg
        self.G, self.D, self.D_face = generator, discriminator, face_discriminator
        g = unwrap(generator)
        self.device = next(g.parameters()).device
        on_cuda = self.device.type == "cuda"
        self.amp_dtype = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(optim_cfg.amp) if on_cuda else None
        )
        self.channels_last = on_cuda and optim_cfg.channels_last
        self.backbone = prepare_module(
            backbone if backbone is not None else build_backbone(loss_cfg), self.device, optim_cfg
        )
        self.weights = loss_cfg.weights()
        # 1. Optimisers (one for G, one for both discriminators), scaler, EMA.
        self.g_params = [p for p in g.parameters() if p.requires_grad]
        self.d_params = [
            p
            for m in (discriminator, face_discriminator)
            if m is not None
            for p in unwrap(m).parameters()
            if p.requires_grad
        ]
        betas = (optim_cfg.betas[0], optim_cfg.betas[1])
        fused = {"fused": True} if on_cuda else {}  # one kernel per optimiser step instead of a loop of them
        self.opt_g = torch.optim.Adam(
            self.g_params, lr=optim_cfg.lr_g, betas=betas, weight_decay=optim_cfg.weight_decay, **fused
        )
        self.opt_d = torch.optim.Adam(
            self.d_params, lr=optim_cfg.lr_d, betas=betas, weight_decay=optim_cfg.weight_decay, **fused
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.ema = copy.deepcopy(g).eval().requires_grad_(False)
        # 2. Compiled forward passes (on CUDA by default; the wrapped modules keep their state),
        # falling back to eager per module if the compiler fails.
        self.compiled = should_compile(optim_cfg.compile, self.device)
        mode = optim_cfg.compile_mode
        self._g_fn = maybe_compile(generator, "the generator", self.compiled, mode)
        self._d_fn = maybe_compile(discriminator, "the discriminator", self.compiled, mode)
        self._d_face_fn = maybe_compile(face_discriminator, "the face discriminator", self.compiled, mode)
        self.step_count = 0  # steps attempted, skipped ones included
        self.consecutive_skips = 0
        self.total_skips = 0
        # Seconds per phase, summed over steps; None (the default) measures nothing. When set (a
        # dict), each phase ends with a device synchronisation: a benchmark's breakdown, not a run's.
        self.phase_seconds: dict[str, float] | None = None
        self._phase_t0 = 0.0

    # ----------------------------------------------------------------------------------------
    def _phase(self, name: str | None) -> None:
        """Close the running phase as ``name`` (None: start timing) when phase timing is on."""
        if self.phase_seconds is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if name is not None:
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + now - self._phase_t0
        self._phase_t0 = now

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def prepare_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Check the keys this variant needs and move them to the device (channels-last on CUDA)."""
        needed = BATCH_KEYS + (FACE_KEYS if self.model_cfg.uses_face else ())
        missing = [k for k in needed if k not in batch]
        if missing:
            raise ValueError(f"batch lacks {missing} (has {sorted(batch)})")
        out = {}
        for k in needed:
            v = batch[k].to(self.device, non_blocking=True)
            if v.dim() == 4 and self.channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _features(self, images: Tensor, grad: bool) -> dict[str, Tensor]:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self.backbone(images)

    def _weighted(self, terms: dict[str, Tensor]) -> Tensor:
        # The one place where loss weights are applied.
        return sum_terms(self.weights[k] * v for k, v in terms.items())

    def _flow_terms(
        self, flows: dict[int, Tensor], source_feats: dict[str, Tensor], target_feats: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        strides = [s for s in self.loss_cfg.correctness_strides if s in flows]
        if strides:
            terms["sampling_correctness"] = sum_terms(
                sampling_correctness_loss(source_feats[layer], target_feats[layer], flows[s]).mean()
                for s in strides
                for layer in (self.backbone.correctness_layer(s),)
            )
        terms["flow_reg"] = sum_terms(
            flow_regularization_loss(f, self.loss_cfg.flow_reg_kernels).mean() for f in flows.values()
        )
        return terms

    # ----------------------------------------------------------------------------------------
    def generator_loss(
        self, batch: dict[str, Tensor], adversarial: bool = True
    ) -> tuple[Tensor, dict[str, Tensor], GeneratorOutput]:
        """Gmain: weighted total, unweighted terms (scalars) and the generator output; without
        ``adversarial`` the discriminators are not run and their terms are left out."""
        with self._autocast():
            out: GeneratorOutput = self._g_fn(
                batch["source_image"], batch["source_pose"], batch["target_pose"]
            )
            fake, real = out.image, batch["target_image"]
            fake_feats = self._features(fake, grad=True)
            need_source = bool(out.flows)
            with torch.no_grad():
                both = self.backbone(torch.cat([real, batch["source_image"]]) if need_source else real)
            real_feats = {k: v[: real.shape[0]] for k, v in both.items()}
            terms = {
                "l1": l1_loss(fake, real).mean(),
                "content": content_loss(fake_feats, real_feats, self.backbone.content_layers).mean(),
                "style": style_loss(fake_feats, real_feats, self.backbone.style_layers).mean(),
            }
            if self.loss_cfg.pose_l1 > 0:
                terms["pose_l1"] = pose_weighted_l1(fake, real, batch["source_pose"], batch["target_pose"])
            if self.loss_cfg.change_l1 > 0:
                terms["change_l1"] = change_weighted_l1(fake, real, batch["source_image"])
            if adversarial:
                with _no_sync(self.D):
                    terms["g_adv"] = lsgan_g_loss(self._d_fn(fake)).mean()
            if out.flows:
                source_feats = {k: v[real.shape[0] :] for k, v in both.items()}
                terms.update(self._flow_terms(out.flows, source_feats, real_feats))
            if out.attn_warped_image:
                terms["attn_rec"] = sum_terms(
                    attention_reconstruction_loss(img, real).mean() for img in out.attn_warped_image.values()
                )
            if self.D_face is not None:
                face_d = unwrap_as(self.D_face, FaceDiscriminator)
                assert self._d_face_fn is not None  # compiled (or not) with D_face
                boxes, valid = batch["target_face_box"], batch["target_face_valid"].bool()
                fake_face, real_face = face_d.crop(fake, boxes), face_d.crop(real, boxes)
                # Every sample goes through the face D and is masked afterwards, so all ranks run the
                # same graph whatever their faces (DDP needs identical reductions everywhere).
                if adversarial:
                    with _no_sync(self.D_face):
                        terms["face_adv"] = masked_mean(lsgan_g_loss(self._d_face_fn(fake_face)), valid)
                with torch.no_grad():
                    real_face_feats = self.backbone(real_face)
                fake_face_feats = self._features(fake_face, grad=True)
                terms["face_perceptual"] = masked_mean(
                    content_loss(fake_face_feats, real_face_feats, self.backbone.content_layers), valid
                )
        return self._weighted(terms), terms, out

    def discriminator_loss(
        self, batch: dict[str, Tensor], fake: Tensor, r1: bool = False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Dmain (+ Dreg): total and terms; ``fake`` is detached here."""
        real, fake = batch["target_image"].detach(), fake.detach()
        if r1:
            real.requires_grad_(True)
        b = real.shape[0]
        with self._autocast():
            logits = self._d_fn(torch.cat([real, fake]))
            d_real, d_fake = lsgan_d_loss(logits[:b], logits[b:])
            terms = {"d_real": d_real.mean(), "d_fake": d_fake.mean()}
            if r1:
                terms["r1"] = r1_penalty(logits[:b], real).mean()
            if self.D_face is not None:
                face_d = unwrap_as(self.D_face, FaceDiscriminator)
                assert self._d_face_fn is not None  # compiled (or not) with D_face
                boxes, valid = batch["target_face_box"], batch["target_face_valid"].bool()
                faces = torch.cat([face_d.crop(real.detach(), boxes), face_d.crop(fake, boxes)])
                face_logits = self._d_face_fn(faces)
                f_real, f_fake = lsgan_d_loss(face_logits[:b], face_logits[b:])
                terms["d_face_real"] = masked_mean(f_real, valid)
                terms["d_face_fake"] = masked_mean(f_fake, valid)
        total = terms["d_real"] + terms["d_fake"]
        if self.D_face is not None:
            total = total + self.loss_cfg.face_adversarial * (terms["d_face_real"] + terms["d_face_fake"])
        if r1:  # lazy regularisation: applied every r1_every steps, scaled up by the interval
            total = total + 0.5 * self.loss_cfg.r1_gamma * self.loss_cfg.r1_every * terms["r1"]
        return total, terms

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_ema(self) -> None:
        g = unwrap(self.G)
        decay = ema_decay_at(self.step_count, self.optim_cfg.ema_decay, self.optim_cfg.ema_start)
        ema_p: list[Tensor] = list(self.ema.parameters())
        g_p = [p.detach() for p in g.parameters()]
        torch._foreach_lerp_(ema_p, g_p, 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), g.buffers()):
            b_ema.copy_(b)

    def _finish(
        self, terms: dict[str, Tensor], optimizers: list[torch.optim.Optimizer], norms: dict[str, Tensor]
    ) -> dict[str, float]:
        """Fault check (all ranks together), optimiser steps, EMA, counters; returns floats."""
        self._phase("forward_backward")
        stats = {**terms, **norms}
        values = torch.stack([v.detach().float().reshape(()).to(self.device) for v in stats.values()])
        bad = (~torch.isfinite(values).all()).float().reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        # The step's one host synchronisation: the all-ranks verdict and the logged values together.
        host = torch.cat([bad, values]).cpu()
        skipped = bool(host[0])
        if skipped:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            self.consecutive_skips += 1
            self.total_skips += 1
        else:
            for opt in optimizers:
                self.scaler.step(opt)
            self.update_ema()
            self.consecutive_skips = 0
        self.scaler.update()
        self.step_count += 1
        self._phase("check_optimizer_ema")
        result = dict(zip(stats, host[1:].tolist()))
        result["skipped"] = float(skipped)
        return result

    def _unscale_and_norm(self, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> Tensor:
        if self.scaler.is_enabled():
            self.scaler.unscale_(opt)
        return _grad_norm(params, self.optim_cfg.grad_clip).to(self.device)

    def step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One training step; returns the unweighted terms, totals, grad norms and ``skipped``."""
        self._phase(None)
        batch = self.prepare_batch(batch)
        g = unwrap(self.G)
        if (
            self.step_count < self.optim_cfg.flow_warmup_steps
            and getattr(g, "flow_estimator", None) is not None
        ):
            return self.flow_warmup_step(batch)
        if self.step_count < self.optim_cfg.flow_warmup_steps + self.optim_cfg.generator_warmup_steps:
            return self.generator_warmup_step(batch)
        for m in (self.G, self.D, self.D_face):
            if m is not None:
                m.train()
        # 1. Gmain.
        self.opt_g.zero_grad(set_to_none=True)
        g_total, g_terms, out = self.generator_loss(batch)
        self.scaler.scale(g_total).backward()
        # 2. Dmain (+ Dreg): first drop the gradient G's adversarial term left on D.
        self.opt_d.zero_grad(set_to_none=True)
        r1 = self.loss_cfg.r1_gamma > 0 and self.step_count % self.loss_cfg.r1_every == 0
        d_total, d_terms = self.discriminator_loss(batch, out.image, r1=r1)
        self.scaler.scale(d_total).backward()
        # 3-4. Fault check, updates, EMA.
        norms = {
            "grad_norm_g": self._unscale_and_norm(self.opt_g, self.g_params),
            "grad_norm_d": self._unscale_and_norm(self.opt_d, self.d_params),
        }
        terms = {**g_terms, "g_total": g_total, **d_terms, "d_total": d_total}
        return self._finish(terms, [self.opt_g, self.opt_d], norms)

    def flow_warmup_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """GFLA's warm-up: only the flow field estimator trains, on sampling correctness and flow
        regularisation (with ``optim.warmup_attention`` also the encoders and the attention, on
        attention reconstruction). It runs outside G's DDP wrapper, so its gradients are averaged
        by hand."""
        g = unwrap_as(self.G, AttnFlowGenerator)
        g.train()
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            flows = g.flow_fields(batch["source_image"], batch["source_pose"], batch["target_pose"])
            with torch.no_grad():
                feats = self.backbone(torch.cat([batch["target_image"], batch["source_image"]]))
            b = batch["target_image"].shape[0]
            terms = self._flow_terms(
                flows, {k: v[b:] for k, v in feats.items()}, {k: v[:b] for k, v in feats.items()}
            )
            if self.optim_cfg.warmup_attention and getattr(g, "attention", None) is not None:
                images = g.attention_images(batch["source_image"], batch["source_pose"], batch["target_pose"])
                terms["attn_rec"] = sum_terms(
                    attention_reconstruction_loss(img, batch["target_image"]).mean()
                    for img in images.values()
                )
        total = self._weighted(terms)
        self.scaler.scale(total).backward()
        grads = [p.grad for p in g.parameters() if p.grad is not None]
        if dist.is_available() and dist.is_initialized() and grads:
            flat = torch.cat([grad.reshape(-1) for grad in grads]) / dist.get_world_size()
            dist.all_reduce(flat)
            offset = 0
            for grad in grads:
                n = grad.numel()
                grad.copy_(flat[offset : offset + n].view_as(grad))
                offset += n
        norms = {"grad_norm_g": self._unscale_and_norm(self.opt_g, self.g_params)}
        result = self._finish({**terms, "g_total": total}, [self.opt_g], norms)
        result["warmup"] = 1.0
        return result

    def generator_warmup_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """The whole generator on its non-adversarial terms; the discriminators do not run (DDP on G
        averages its gradients as in a GAN step)."""
        self.G.train()
        self.opt_g.zero_grad(set_to_none=True)
        g_total, g_terms, _ = self.generator_loss(batch, adversarial=False)
        self.scaler.scale(g_total).backward()
        norms = {"grad_norm_g": self._unscale_and_norm(self.opt_g, self.g_params)}
        result = self._finish({**g_terms, "g_total": g_total}, [self.opt_g], norms)
        result["generator_warmup"] = 1.0
        return result

    # ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """G, D, face D, EMA, both optimisers, scaler and counters (RNG and config are the caller's)."""
        return {
            "generator": unwrap(self.G).state_dict(),
            "discriminator": unwrap(self.D).state_dict(),
            "face_discriminator": unwrap(self.D_face).state_dict() if self.D_face is not None else None,
            "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step_count,
            "consecutive_skips": self.consecutive_skips,
            "total_skips": self.total_skips,
        }

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.G).load_state_dict(state["generator"])
        unwrap(self.D).load_state_dict(state["discriminator"])
        if (self.D_face is None) != (state.get("face_discriminator") is None):
            raise ValueError("checkpoint and model disagree on the face discriminator (different variant?)")
        if self.D_face is not None:
            unwrap(self.D_face).load_state_dict(state["face_discriminator"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.total_skips = int(state.get("total_skips", 0))
