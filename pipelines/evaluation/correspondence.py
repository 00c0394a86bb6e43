"""Scores of the method itself against the renderer's ground truth (synthetic test sets only).

Per test pair, from the two views' ground truth (:mod:`datasets.synthetic.groundtruth`, carried
in the test shards as ``vN.gt.npz``) the true flow from target to source pixels and its mask;
then, for every method:

- ``flow_epe_s<k>``: end-point error (image pixels) of the model's flow at stride k, upsampled to
  image size as :func:`model.warp.resize_flow` does, against the true flow on the mask; ``flow_epe``
  is that of the finest flow (copy_source's ``flow_epe`` is the identity flow's: the reference);
- ``attn_epe_s<k>``: the same for the attention's expected source location (softmax-weighted
  mean of the source cell centres) at stride k;
- ``branch_choice_s<k>``: share of masked target pixels where the combination map (> 0.5 =
  attention) prefers the branch whose location is nearer the truth there;
- ``appearance_de00``: per garment region of the target (its garment map, pixels showing a single
  body point), CIEDE2000 between the mean colours of the output and of the target; median over
  regions and pairs (``appearance_de00_<garment>``: median over that garment's regions).

A portrait set's ground truth (:mod:`datasets.synthetic.portrait_groundtruth`) is scored the same
way with its own names (:func:`labels_for`): parts of the head model, and appearance regions
(``appearance_de00_hair``, ``_glasses``, ``_skin``, ``_lips`` ...) over every pixel a region owns
(glasses frames and earrings are thinner than a pixel at 64x64: no pixel shows them alone).

Per-pair EPE is the mean over the pair's masked pixels; a method's EPE is the mean over pairs
with any masked pixel.  Everything here is accumulated per part of the test pairs and merged in
pair order, so any number of evaluation workers gives the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datasets.shards.samples import parse_sample
from datasets.shards.tar import iter_samples, read_shard
from datasets.synthetic import groundtruth
from datasets.synthetic.figure_render import BODY_PARTS, GARMENTS
from datasets.synthetic.portrait_groundtruth import PORTRAIT_PARTS, PORTRAIT_REGIONS
from model.generator import AttnFlowGenerator
from model.warp import attention_warp, pixel_grid, resize_flow

MIN_REGION_PIXELS = 12  # a garment region smaller than this (a sliver of a shoe) has no stable mean colour
EXAMPLE_PAIRS = 4  # pairs drawn in the true-vs-predicted flow picture
EXAMPLE_MIN_SHARE = 0.3  # ... the first ones whose true flow covers this share of the target body
IDENTITY = "identity"


def unavailable_reason(manifest: dict) -> str | None:
    """Why the test shards cannot be scored against ground truth, or None when they can."""
    truth = manifest.get("groundtruth") or {}
    if not truth.get("test_sample_views"):
        return (
            "the test shards carry no renderer ground truth (real data, or shards written before "
            "manifest format 2): correspondence scores need a synthetic figure dataset"
        )
    return None


@dataclass(frozen=True)
class TruthLabels:
    """What a ground truth's indices name, and which pixels its appearance scores use."""

    parts: tuple[str, ...]
    regions: tuple[str, ...]  # index 0: background, never scored
    whole_regions: bool  # True: every pixel a region owns; False: pixels showing one body point


FIGURE_LABELS = TruthLabels(BODY_PARTS, GARMENTS, whole_regions=False)
PORTRAIT_LABELS = TruthLabels(PORTRAIT_PARTS, PORTRAIT_REGIONS, whole_regions=True)


def labels_for(manifest: dict) -> TruthLabels:
    """The labels of the ground truth these shards carry (by the dataset's task)."""
    return PORTRAIT_LABELS if manifest.get("task") == "portrait" else FIGURE_LABELS


def load_test_truth(shards: str, manifest: dict) -> dict[str, bytes]:
    """Encoded ground truth of every test view that has it, by image name."""
    out: dict[str, bytes] = {}
    for shard in manifest["shards"]:
        if shard["split"] != "test":
            continue
        for key, files in iter_samples(read_shard(shards, shard)):
            sample = parse_sample(key, files)
            for i, name in enumerate(sample.names):
                data = files.get(f"v{i}.gt.npz")
                if data is not None and name not in out:
                    out[name] = bytes(data)
    return out


def forward_with_features(g: AttnFlowGenerator, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``g``'s forward on a batch, and what its two encoders returned in it (read by hooks: the
    output keeps no features, and running the encoders again cost 7% of an evaluation)."""
    seen: dict[str, Any] = {}
    hooks = [
        g.reference_encoder.register_forward_hook(lambda m, i, o: seen.setdefault("textures", o)),
        g.skeleton_encoder.register_forward_hook(lambda m, i, o: seen.setdefault("skeleton", o)),
    ]
    try:
        out = g(batch["source_image"], batch["source_pose"], batch["target_pose"])
    finally:
        for h in hooks:
            h.remove()
    return out, seen


def model_fields(
    g: AttnFlowGenerator, out: Any, batch: dict[str, Any], features: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """The generator's locations as flows at image size ([B,2,H,W], image pixels, target->source):
    ``flow_s<k>`` per flow stride and ``attn_s<k>`` (expected source location) per attention
    stride; and its combination maps upsampled to image size ({k: [B,1,H,W]}). ``features``: the
    encoders' outputs of the forward that gave ``out`` (:func:`forward_with_features`); without
    them the encoders run again on the same inputs."""
    h, w = batch["source_image"].shape[-2:]
    fields = {f"flow_s{s}": resize_flow(f.float(), (h, w)) for s, f in out.flows.items()}
    if g.attention is not None:
        src = batch["source_image"]
        features = features or {}
        textures = features.get("textures")
        if textures is None:
            textures = g.reference_encoder(torch.cat([src, batch["source_pose"]], dim=1))
        skeleton = features.get("skeleton")
        if skeleton is None:
            skeleton = g.skeleton_encoder(batch["target_pose"])
        for s in g.attention.scales:
            if s not in g.cfg.warp_scales:
                continue
            q, k = g.attention.queries_keys(s, skeleton[s], textures[s])
            hs, ws = k.shape[-2:]
            cells = pixel_grid(hs, ws, device=q.device).expand(q.shape[0], -1, -1, -1)
            expected = attention_warp(q.float(), k.float(), cells)  # softmax-weighted mean cell (x, y)
            fields[f"attn_s{s}"] = resize_flow(expected - pixel_grid(*q.shape[-2:], device=q.device), (h, w))
    maps = {
        s: F.interpolate(m.float(), size=(h, w), mode="bilinear", align_corners=False)
        for s, m in out.combination_maps.items()
    }
    return fields, maps


def _finest(fields: dict[str, Any], kind: str) -> str | None:
    names = [n for n in fields if n.startswith(kind + "_s")]
    return min(names, key=lambda n: int(n.rsplit("_s", 1)[1])) if names else None


def _mean_lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb.reshape(1, 1, 3) / 255.0)[0, 0]


@dataclass
class CorrespondencePart:
    """What one evaluation part accumulates (merged in pair order by :func:`merge`)."""

    index: list[int] = field(default_factory=list)  # pair index of each row below
    per_pair: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # method -> metric -> values
    # (method or field name) -> [n_parts, 2] sums of EPE and counts of masked pixels by target body part
    part_error: dict[str, np.ndarray] = field(default_factory=dict)
    regions: list[tuple[int, str, int, float]] = field(default_factory=list)  # (pair, method, garment, ΔE00)
    masked_pixels: int = 0
    body_pixels: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    labels: TruthLabels = FIGURE_LABELS

    def value(self, method: str, metric: str, v: float) -> None:
        self.per_pair.setdefault(method, {}).setdefault(metric, []).append(v)


class CorrespondenceScorer:
    """Scores each batch's pairs against ground truth (``truth``: image name -> encoded file)."""

    def __init__(
        self,
        truth: dict[str, bytes],
        tolerance_px: float = groundtruth.DEFAULT_TOLERANCE_PX,
        examples: int = EXAMPLE_PAIRS,
        labels: TruthLabels = FIGURE_LABELS,
    ) -> None:
        self.truth = truth
        self.tolerance_px = tolerance_px
        self.examples = examples
        self.part = CorrespondencePart(labels=labels)

    def add(
        self,
        batch: dict[str, Any],
        target: torch.Tensor,
        outputs: dict[str, torch.Tensor],
        fields: dict[str, torch.Tensor] | None,
        maps: dict[int, torch.Tensor] | None,
    ) -> None:
        """``target`` and ``outputs`` (method -> images): uint8 [B,3,H,W]; ``fields``/``maps``:
        the model's (None when the generator exposes none, as a packed model)."""
        for i, (src_name, tgt_name) in enumerate(zip(batch["source_name"], batch["target_name"])):
            if src_name not in self.truth or tgt_name not in self.truth:
                raise KeyError(f"no ground truth for pair {src_name} -> {tgt_name} in the test shards")
            src_gt, tgt_gt = (
                groundtruth.decode(self.truth[src_name]),
                groundtruth.decode(self.truth[tgt_name]),
            )
            flow, mask = groundtruth.true_flow(src_gt, tgt_gt, self.tolerance_px)
            self._pair(int(batch["pair_index"][i]), i, flow, mask, tgt_gt, target, outputs, fields, maps)
            body = (tgt_gt.part != groundtruth.BACKGROUND).sum()
            if len(self.part.examples) < self.examples and mask.sum() >= EXAMPLE_MIN_SHARE * max(body, 1):
                finest = (
                    {
                        n: fields[n][i].permute(1, 2, 0).numpy()
                        for n in (_finest(fields, "flow"), _finest(fields, "attn"))
                        if n is not None
                    }
                    if fields
                    else {}
                )
                self.part.examples.append(
                    {
                        "name": f"{src_name} -> {tgt_name}",
                        "source": outputs["copy_source"][i].permute(1, 2, 0).numpy(),
                        "target": target[i].permute(1, 2, 0).numpy(),
                        "output": outputs["model"][i].permute(1, 2, 0).numpy(),
                        "true": flow,
                        "mask": mask,
                        "predicted": finest,
                    }
                )

    def _pair(
        self,
        index: int,
        i: int,
        flow: np.ndarray,
        mask: np.ndarray,
        tgt_gt: groundtruth.GroundTruth,
        target_u8: torch.Tensor,
        outputs: dict[str, torch.Tensor],
        fields: dict[str, torch.Tensor] | None,
        maps: dict[int, torch.Tensor] | None,
    ) -> None:
        p = self.part
        p.index.append(index)
        p.masked_pixels += int(mask.sum())
        p.body_pixels += int((tgt_gt.part != groundtruth.BACKGROUND).sum())
        truth = flow[mask]  # [n, 2]
        parts = tgt_gt.part[mask]
        located = {IDENTITY: np.zeros_like(flow)}
        if fields:
            located.update({n: f[i].permute(1, 2, 0).numpy() for n, f in fields.items()})
        errors: dict[str, np.ndarray] = {}
        for name, f in located.items():
            e = np.linalg.norm(f[mask] - truth, axis=1)
            errors[name] = e
            sums = p.part_error.setdefault(name, np.zeros((len(p.labels.parts), 2)))
            np.add.at(sums[:, 0], parts, e)
            np.add.at(sums[:, 1], parts, 1.0)
        mean = {n: float(e.mean()) if len(e) else math.nan for n, e in errors.items()}
        p.value("copy_source", "flow_epe", mean[IDENTITY])
        if fields:
            for name in fields:
                kind, stride = name.split("_s")
                p.value("model", f"{kind}_epe_s{stride}", mean[name])
            finest = _finest(fields, "flow")
            p.value("model", "flow_epe", mean[finest] if finest else math.nan)
        for s, m in (maps or {}).items():
            if f"flow_s{s}" in errors and f"attn_s{s}" in errors:
                prefers_attention = m[i, 0].numpy()[mask] > 0.5
                attention_nearer = errors[f"attn_s{s}"] < errors[f"flow_s{s}"]
                p.value(
                    "model",
                    f"branch_choice_s{s}",
                    float((prefers_attention == attention_nearer).mean()) if mask.any() else math.nan,
                )
        # Appearance: the clean pixels (one body point each, or whole regions) of the target's regions.
        clean = (
            (tgt_gt.part != groundtruth.BACKGROUND)
            if p.labels.whole_regions
            else np.isfinite(tgt_gt.surface).all(-1)
        )
        target = target_u8[i].permute(1, 2, 0).numpy().astype(np.float64)
        from skimage.color import deltaE_ciede2000

        for method in ("model", "copy_source", "mean_train_image"):
            image = outputs[method][i].permute(1, 2, 0).numpy().astype(np.float64)
            des = []
            for g in np.unique(tgt_gt.garment[clean]):
                region = clean & (tgt_gt.garment == g)
                if g == 0 or region.sum() < MIN_REGION_PIXELS:
                    continue
                de = float(
                    deltaE_ciede2000(_mean_lab(target[region].mean(0)), _mean_lab(image[region].mean(0)))
                )
                des.append(de)
                p.regions.append((index, method, int(g), de))
            p.value(method, "appearance_de00", float(np.median(des)) if des else math.nan)


def merge(parts: list[CorrespondencePart], examples: int = EXAMPLE_PAIRS) -> CorrespondencePart:
    """Join the parts' accumulations in pair order (the parts are contiguous, in rank order)."""
    out = CorrespondencePart(labels=parts[0].labels if parts else FIGURE_LABELS)
    for part in parts:
        out.index += part.index
        for method, metrics in part.per_pair.items():
            for metric, values in metrics.items():
                out.per_pair.setdefault(method, {}).setdefault(metric, []).extend(values)
        for name, sums in part.part_error.items():
            out.part_error[name] = out.part_error.get(name, 0) + sums
        out.regions += part.regions
        out.masked_pixels += part.masked_pixels
        out.body_pixels += part.body_pixels
        out.examples += part.examples
    out.examples = out.examples[:examples]
    return out


def summarise(part: CorrespondencePart, bootstrap: Any) -> dict[str, dict[str, float]]:
    """Per method its correspondence scores (finite numbers only): mean EPE and branch choice
    over pairs (with ``_ci95_low/_high`` from ``bootstrap(values, kept) -> (low, high)``, ``kept`` the
    mask of the pairs with a finite value; no interval where it returns None), median ΔE00
    over regions and pairs, overall and per garment."""
    scores: dict[str, dict[str, float]] = {}
    for method, metrics in part.per_pair.items():
        for metric, values in metrics.items():
            if metric == "appearance_de00":
                continue
            v = np.asarray(values, np.float64)
            kept = np.isfinite(v)
            v = v[kept]
            if len(v):
                scores.setdefault(method, {})[metric] = float(v.mean())
                ci = bootstrap(v, kept)
                if ci is not None:
                    scores[method].update({f"{metric}_ci95_low": ci[0], f"{metric}_ci95_high": ci[1]})
    for method in {m for _, m, _, _ in part.regions}:
        rows = [(g, de) for _, m, g, de in part.regions if m == method]
        scores.setdefault(method, {})["appearance_de00"] = float(np.median([de for _, de in rows]))
        for g in sorted({g for g, _ in rows}):
            scores[method][f"appearance_de00_{part.labels.regions[g]}"] = float(
                np.median([de for gg, de in rows if gg == g])
            )
    return scores


def part_table(part: CorrespondencePart) -> dict[str, dict[str, float]]:
    """Mean EPE (image pixels) per target body part, by located field (flows, attention, identity)."""
    out: dict[str, dict[str, float]] = {}
    names = part.labels.parts
    for name, sums in part.part_error.items():
        out[name] = {names[k]: float(sums[k, 0] / sums[k, 1]) for k in range(len(names)) if sums[k, 1] > 0}
    return out


def garment_table(part: CorrespondencePart) -> dict[str, dict[str, float]]:
    """Median ΔE00 per garment, by method."""
    out: dict[str, dict[str, float]] = {}
    for method in sorted({m for _, m, _, _ in part.regions}):
        for g in sorted({g for _, m, g, _ in part.regions if m == method}):
            out.setdefault(method, {})[part.labels.regions[g]] = float(
                np.median([de for _, m, gg, de in part.regions if m == method and gg == g])
            )
    return out
