"""Scoring every test pair: the model and both baselines, per pair and as Fréchet statistics, in
batch-aligned parts that any number of processes give bit-identical results for."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.shards.loader import eval_loader
from datasets.shards.samples import decode_image, parse_sample
from datasets.shards.tar import iter_samples, load_manifest, read_shard
from model import metrics as image_metrics
from pipelines.evaluation.correspondence import (
    CorrespondencePart,
    CorrespondenceScorer,
    labels_for,
    load_test_truth,
    merge,
)
from pipelines.evaluation.generators import EvaluationError, GeneratorUnderTest, rebuild_generator
from pipelines.evaluation.networks import Networks, build_networks
from pipelines.evaluation.statistics import (
    Resampling,
    bootstrap_mean_ci,
    frechet_not_computed_reason,
    kernel_distance,
)

METHODS = ("model", "copy_source", "mean_train_image")


BASELINES = METHODS[1:]


TARGETS = "held_out_targets"  # the real target images: the Fréchet distance's floor on this test set


def canonical_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def train_images(shards_dir: Path | str, manifest: dict) -> Iterator[np.ndarray]:
    """Every training image (each view once) as RGB uint8, in shard order (each shard checked
    against the manifest's sha256 as it is read, from a folder or a URL prefix)."""
    size = tuple(manifest["image_size"])
    for shard in manifest["shards"]:
        if shard["split"] != "train":
            continue
        data = read_shard(shards_dir, shard)
        for key, files in iter_samples(data):
            sample = parse_sample(key, files)
            for i, view in enumerate(sample.views):
                yield decode_image(view.jpeg, f"{shard['name']}:{key}.v{i}", size)


@dataclass(frozen=True)
class PairIdentities:
    """The identity of every test pair (pair order), as the test shards record it, or why not."""

    identities: list[str] | None
    missing: str = ""  # why ``identities`` is None
    cross_identity_pairs: int = 0  # pairs whose target's identity differs from the source's


def test_pairs(shards_dir: Path | str, manifest: dict) -> list[tuple[str, str, str]]:
    """(source name, target name, identity or "") of every test pair, in the order the evaluation
    scores them, from the test samples' ``meta.json``."""
    found: list[tuple[str, str, str]] = []
    for shard in manifest["shards"]:
        if shard["split"] != "test":
            continue
        for _key, files in iter_samples(read_shard(shards_dir, shard)):
            meta = json.loads(bytes(files["meta.json"]))
            for i, j in meta.get("pairs", []):
                found.append((meta["names"][i], meta["names"][j], str(meta.get("identity") or "")))
    return found


def pair_identities(
    shards_dir: Path | str,
    manifest: dict,
    names: list[tuple[str, str]],
    identity_of: Callable[[str], str] | None = None,
) -> PairIdentities:
    """Each test pair's identity from its sample's ``meta.json`` (``identity``: the source image's,
    :func:`datasets.raw.layout.identity_of` at preprocessing), checked against the scored pairs
    ``names`` (source, target) in order.  A name the layout's pattern does not match is its own
    identity there: such a pair has no identity.  ``identity_of`` (name -> identity) counts pairs
    whose target is of another identity (the source's identity is the unit then)."""
    found = test_pairs(shards_dir, manifest)
    if [(a, b) for a, b, _ in found] != [tuple(n) for n in names]:
        return PairIdentities(
            None, f"the test shards list {len(found)} pairs, not the {len(names)} scored in order"
        )
    if not any(ident for _, _, ident in found):
        return PairIdentities(None, "the test shards record no identity (sample meta.json has none)")
    ids = [ident if ident and ident != Path(src).stem else "" for src, _, ident in found]
    cross = sum(
        1
        for (_, tgt, _), ident in zip(found, ids)
        if ident and identity_of is not None and identity_of(tgt) != ident
    )
    return PairIdentities(ids, "", cross)


def reference_set_hash(manifest: dict) -> str:
    return canonical_sha256(sorted(s["sha256"] for s in manifest["shards"] if s["split"] == "train"))


def field_ssim(generated: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-image SSIM [B] as the published tables compute it (PG2 -> PATN -> GFLA's
    ``script/metrics.py``): scikit-image, Gaussian weights sigma 1.5, population covariance, all
    three channels at once, and ``data_range = generated.max() - generated.min()`` of each
    generated image rather than the uint8 range 255.  A constant image (range 0) would divide by
    zero in the field's script; it is given range 1 here."""
    from skimage.metrics import structural_similarity

    out = np.empty(len(generated))
    for i, (g, t) in enumerate(
        zip(generated.permute(0, 2, 3, 1).numpy(), target.permute(0, 2, 3, 1).numpy())
    ):
        data_range = max(int(g.max()) - int(g.min()), 1)
        out[i] = structural_similarity(
            g,
            t,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=2,
            data_range=data_range,
        )
    return out


def perceptual(net: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image perceptual distance with whichever network is configured (the LPIPS files carry
    their own distance; a backbone uses LPIPS's formula with equal weights)."""
    if hasattr(net, "distance"):
        return net.distance(a, b)
    return image_metrics.lpd_between(net, a, b)


def nchw_uint8(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


class RealImageLayers:
    """Feature layers of the real test images, by name, each computed on its own (a batch of one).

    Every test image is a target in several pairs and a source (``copy_source``) in as many: per
    pair that is the same network pass again and again (144 pairs, 48 distinct images). A pass
    on one image alone gives the same numbers whichever batch, part or worker first needed it,
    so the scores stay independent of the worker count. The last ``keep`` images are kept: pairs
    come grouped by identity in the field's CSVs, so a small window holds them.
    """

    def __init__(self, net: Any, keep: int = 64) -> None:
        self.net, self.keep = net, keep
        self.cache: dict[str, list[torch.Tensor]] = {}

    def _one(self, name: str, image: torch.Tensor) -> list[torch.Tensor]:
        if name not in self.cache:
            if len(self.cache) >= self.keep:
                self.cache.pop(next(iter(self.cache)))
            self.cache[name] = self.net.layers(image[None])
        return self.cache[name]

    def __call__(self, names: list[str], images: torch.Tensor) -> list[torch.Tensor]:
        per = [self._one(n, im) for n, im in zip(names, images)]
        return [torch.cat(level) for level in zip(*per)]

    def each(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The same single-image passes, not kept: for images that are seen once."""
        return [torch.cat(level) for level in zip(*(self.net.layers(im[None]) for im in images))]


@dataclass
class PairScores:
    names: list[tuple[str, str]]
    per_method: dict[str, dict[str, list[float]]]  # method -> metric -> per-pair values


@dataclass(frozen=True)
class PairSettings:
    """What :func:`evaluate_pairs` scores besides the plain image metrics, and what it keeps."""

    masked: bool  # also the masked forms (body mask of the target's keypoints)
    mask_radius: float
    images_out: Path | None  # where the model's images are saved; None: not saved
    grid_rows: int  # sample grid rows kept (the first pairs)


class SharedBackbone:
    """One backbone for both distances (the offline default): each image set goes through it once,
    its layers giving the perceptual distance and its deepest layer the pooled features; real test
    images (targets, copy_source) once per image, the mean image once in all."""

    def __init__(self, net: Any, mean_t: torch.Tensor) -> None:
        self.net = net
        self.real = RealImageLayers(net)
        self.mean_layers: list[torch.Tensor] = net.layers(mean_t[None])

    @staticmethod
    def serves(nets: Networks) -> bool:
        return nets.fd is nets.lpd and isinstance(nets.fd, image_metrics.ModuleFeatures)

    def layers(
        self, method: str, batch: dict[str, Any], images: torch.Tensor, n: int, per_image: bool
    ) -> list[torch.Tensor]:
        """One method's layers for a batch of ``n`` pairs."""
        if method == "copy_source":
            return self.real(batch["source_name"], images)
        if method == "mean_train_image":
            return [x.expand(n, *x.shape[1:]) for x in self.mean_layers]
        if method == "model" and per_image:
            # Images read from files take the real images' single-image passes: a folder
            # holding the sources scores exactly as copy_source, whatever the batch around them.
            return self.real.each(images)
        return self.net.layers(images)


@dataclass
class _Gathered:
    """What :func:`evaluate_pairs` collects over the batches, in pair order."""

    per: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {m: {} for m in METHODS})
    # The held-out targets themselves too: their Fréchet distance is what a perfect model would score.
    feats: dict[str, list[np.ndarray]] = field(default_factory=lambda: {m: [] for m in (*METHODS, TARGETS)})
    names: list[tuple[str, str]] = field(default_factory=list)
    grid: list[dict[str, Any]] = field(default_factory=list)

    def add(self, method: str, scores: dict[str, torch.Tensor | np.ndarray], pooled: torch.Tensor) -> None:
        for key, values in scores.items():
            self.per[method].setdefault(key, []).extend(float(v) for v in values)
        self.feats[method].append(pooled.detach().cpu().float().numpy())

    def result(self) -> tuple[PairScores, dict[str, np.ndarray], list[dict[str, Any]]]:
        return PairScores(self.names, self.per), {m: stack_rows(v) for m, v in self.feats.items()}, self.grid


def _next_index(batch: dict[str, Any], last_index: int) -> tuple[list[int], int]:
    """The batch's pair indices and the last of them; pairs must come in order."""
    index = batch["pair_index"].tolist()
    if index and index[0] <= last_index:
        raise EvaluationError(f"test pairs out of order: {index[0]} after {last_index}")
    return index, index[-1]


def _method_outputs(
    generator: GeneratorUnderTest,
    batch: dict[str, Any],
    target: torch.Tensor,
    mean_t: torch.Tensor,
    with_fields: bool,
) -> tuple[dict[str, torch.Tensor], Any, Any]:
    """Each method's uint8 images of the batch, and the model's fields and maps (or None)."""
    fields = maps = None
    if with_fields and generator.fields is not None:
        image, fields, maps = generator.fields(batch)  # one forward gives the image and its fields
    else:
        image = generator.fn(batch)
    outputs = {
        # uint8 as it is when the images were read from files; else the generator's [-1, 1].
        "model": image if image.dtype == torch.uint8 else image_metrics.to_uint8(image),
        "copy_source": image_metrics.to_uint8(batch["source_image"]),
        "mean_train_image": mean_t.expand_as(target).contiguous(),
    }
    return outputs, fields, maps


def _body_masks(batch: dict[str, Any], target: torch.Tensor, mask_radius: float) -> torch.Tensor:
    return torch.from_numpy(
        np.stack(
            [
                image_metrics.body_mask(kp.numpy(), (target.shape[-2], target.shape[-1]), mask_radius)
                for kp in batch["target_keypoints"]
            ]
        )
    )


def _image_scores(
    images: torch.Tensor,
    target: torch.Tensor,
    lpd: torch.Tensor,
    nets: Networks,
    masks: torch.Tensor | None,
    target_m: torch.Tensor | None,
) -> dict[str, torch.Tensor | np.ndarray]:
    """One method's per-pair scores of a batch (and their masked forms when ``masks`` is given)."""
    scores: dict[str, torch.Tensor | np.ndarray] = {
        "ssim": field_ssim(images, target),
        "ssim_range255": image_metrics.ssim(images, target),
        "psnr": image_metrics.psnr(images, target),
        nets.names.lpd: lpd,
    }
    if masks is not None and target_m is not None:
        images_m = image_metrics.apply_mask(images, masks)
        scores["masked_ssim"] = field_ssim(images_m, target_m)
        scores["masked_ssim_range255"] = image_metrics.ssim(images_m, target_m)
        scores[nets.names.masked_lpd] = perceptual(nets.lpd, images_m, target_m)
    return scores


def _keep_pairs(
    gathered: _Gathered,
    batch: dict[str, Any],
    target: torch.Tensor,
    outputs: dict[str, torch.Tensor],
    settings: PairSettings,
) -> None:
    """The batch's pair names, the model's images saved, the first pairs kept for the sample grid."""
    from PIL import Image

    for i, (src, tgt) in enumerate(zip(batch["source_name"], batch["target_name"])):
        gathered.names.append((src, tgt))
        if settings.images_out is not None:
            Image.fromarray(outputs["model"][i].permute(1, 2, 0).numpy()).save(
                settings.images_out / f"{Path(src).stem}_2_{Path(tgt).stem}.png"
            )
        if len(gathered.grid) < settings.grid_rows:
            gathered.grid.append(
                {
                    "source": outputs["copy_source"][i],
                    "target": target[i],
                    "output": outputs["model"][i],
                    "mean": outputs["mean_train_image"][i],
                    "target_keypoints": batch["target_keypoints"][i].numpy(),
                    "name": f"{Path(src).stem} -> {Path(tgt).stem}",
                }
            )


def evaluate_pairs(
    generator: GeneratorUnderTest,
    batches: Iterable[dict[str, Any]],
    mean_image: np.ndarray,
    nets: Networks,
    settings: PairSettings,
    progress: Any = None,
    correspondence: CorrespondenceScorer | None = None,
) -> tuple[PairScores, dict[str, np.ndarray], list[dict[str, Any]]]:
    """Generate every pair, save the model's images, score all methods per pair, gather the
    Fréchet features of every pair (method -> [pairs, D] float32, in pair order); with a
    ``correspondence`` scorer also score the flows and appearance against ground truth."""
    gathered = _Gathered()
    mean_t = torch.from_numpy(mean_image).permute(2, 0, 1)
    shared: SharedBackbone | None = None  # built with the first batch
    last_index = -1
    for batch in batches:
        index, last_index = _next_index(batch, last_index)
        target = image_metrics.to_uint8(batch["target_image"])
        outputs, fields, maps = _method_outputs(generator, batch, target, mean_t, correspondence is not None)
        masks = _body_masks(batch, target, settings.mask_radius) if settings.masked else None
        target_m = image_metrics.apply_mask(target, masks) if masks is not None else None
        if shared is None and SharedBackbone.serves(nets):
            shared = SharedBackbone(nets.fd, mean_t)
        target_layers = shared.real(batch["target_name"], target) if shared is not None else None
        for method, images in outputs.items():
            if shared is not None and target_layers is not None:
                layers = shared.layers(method, batch, images, len(target), generator.per_image)
                lpd = image_metrics.perceptual_distance(layers, target_layers)
                pooled = layers[-1].mean(dim=(2, 3))
            else:
                lpd, pooled = perceptual(nets.lpd, images, target), nets.fd.pooled(images)
            gathered.add(method, _image_scores(images, target, lpd, nets, masks, target_m), pooled)
        if correspondence is not None:
            correspondence.add(batch, target, outputs, fields, maps)
        target_pooled = (
            target_layers[-1].mean(dim=(2, 3)) if target_layers is not None else nets.fd.pooled(target)
        )
        gathered.feats[TARGETS].append(target_pooled.detach().cpu().float().numpy())
        if progress is not None:
            progress.update(len(index))
        _keep_pairs(gathered, batch, target, outputs, settings)
    return gathered.result()


def stack_rows(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def feature_stats(rows: np.ndarray, chunk: int) -> image_metrics.FeatureStats:
    """Statistics of feature rows in pair order, summed in fixed chunks: the float64 sums (and so
    the Fréchet distance) come out bit-identical however the pairs were split between processes."""
    stats = image_metrics.FeatureStats()
    for lo in range(0, len(rows), chunk):
        stats.update(rows[lo : lo + chunk])
    return stats


@dataclass
class PartJob:
    """One worker process's share of the test pairs (pickled to it)."""

    rank: int
    world_size: int
    shards: str
    batch_size: int
    threads: int
    ecfg: Any
    loss_cfg: Any
    source: tuple[str, str] | None
    mean_image: np.ndarray
    masked: bool
    images_out: str  # "": the model's images are not written
    grid_rows: int
    progress_total: int = 0  # pairs in the whole test set; 0: no progress bar
    correspondence: bool = False  # score against the test shards' ground truth (correspondence.py)


@dataclass
class PartResult:
    pairs: PairScores
    features: dict[str, np.ndarray]
    grid: list[dict[str, Any]]
    skipped: int
    errors: list[str]
    correspondence: CorrespondencePart | None = None


def evaluate_part(
    job: PartJob, generator: GeneratorUnderTest | None = None, nets: Networks | None = None
) -> PartResult:
    """Score the ``rank``-th batch-aligned contiguous part of the test pairs (in this process when
    ``generator``/``nets`` are given, else rebuilt from ``job.source`` in a worker)."""
    torch.set_num_threads(job.threads)
    nets = nets or build_networks(job.ecfg, job.loss_cfg)
    if generator is None:
        assert job.source is not None  # a part run in a worker names where its generator comes from
        generator = rebuild_generator(job.source)
    loader = eval_loader(
        job.shards,
        batch_size=job.batch_size,
        rank=job.rank,
        world_size=job.world_size,
        num_workers=0,
        align_batches=True,
    )
    from tqdm import tqdm

    # One bar per process; with several workers each shows its share (position = rank).
    bar = tqdm(
        total=math.ceil(job.progress_total / job.world_size),
        desc=f"test pairs [{job.rank + 1}/{job.world_size}]",
        unit="pair",
        position=job.rank,
        disable=job.progress_total == 0,
        dynamic_ncols=True,
    )
    manifest = load_manifest(job.shards) if job.correspondence else {}
    scorer = (
        CorrespondenceScorer(load_test_truth(job.shards, manifest), labels=labels_for(manifest))
        if job.correspondence
        else None
    )
    pairs, feats, grid = evaluate_pairs(
        generator,
        loader,
        job.mean_image,
        nets,
        PairSettings(
            masked=job.masked,
            mask_radius=job.ecfg.mask_radius,
            images_out=Path(job.images_out) if job.images_out else None,
            grid_rows=job.grid_rows,
        ),
        bar,
        scorer,
    )
    bar.close()
    return PartResult(
        pairs,
        feats,
        grid,
        loader.skipped,
        list(loader.recent_errors[-1:]),
        scorer.part if scorer is not None else None,
    )


def evaluate_parallel(jobs: list[PartJob], generator: GeneratorUnderTest, nets: Networks) -> PartResult:
    """Run the parts (one in this process, or each in a spawned worker) and join them in pair order."""
    if len(jobs) == 1:
        results = [evaluate_part(jobs[0], generator, nets)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if generator.source is None:
            raise EvaluationError(
                "evaluate.workers > 1 needs a generator loaded from a checkpoint or a model URI"
            )
        # spawn, not fork: a forked copy of a process holding OpenMP threads can deadlock.
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(evaluate_part, jobs))
    names = [n for r in results for n in r.pairs.names]
    per = {
        m: {
            k: [v for r in results for v in r.pairs.per_method[m].get(k, [])]
            for k in results[0].pairs.per_method[m]
        }
        for m in METHODS
    }
    feats = {
        m: stack_rows([r.features[m] for r in results if len(r.features[m])]) for m in (*METHODS, TARGETS)
    }
    grid = [row for r in results for row in r.grid][: jobs[0].grid_rows]
    corr = [r.correspondence for r in results if r.correspondence is not None]
    return PartResult(
        PairScores(names, per),
        feats,
        grid,
        sum(r.skipped for r in results),
        [e for r in results for e in r.errors],
        merge(corr) if corr else None,
    )


@dataclass
class Summary:
    """Scores by method (finite numbers only), and why a score was not computed."""

    scores: dict[str, dict[str, float]]
    not_computed: dict[str, dict[str, str]]


def capped(values: list[float]) -> np.ndarray:
    """Per-pair values as averaged: +inf PSNR (an exact copy) capped at 100 dB, as finite_mean does."""
    v = np.asarray(values, np.float64)
    return np.where(np.isinf(v), 100.0, v)


def summarise(
    pairs: PairScores,
    features: dict[str, np.ndarray],
    reference: np.ndarray,
    nets: Networks,
    ecfg: Any,
    resampling: Resampling,
) -> Summary:
    """Each method's per-pair means with bootstrap 95% intervals (``<metric>_ci95_low/high``,
    resampling the units of ``resampling``: identities, or pairs where there are none), and
    its set-level distances to the reference features: KID (mean and ``_std`` over subsets) always,
    the Fréchet distance only where the distinct samples outnumber the feature dimensions."""
    kid = nets.description["fd"]["kid_metric"]
    ref_reason = frechet_not_computed_reason(reference)
    if ref_reason is None:
        mu_r, cov_r = feature_stats(reference, ecfg.batch_size).mean_cov()
    out: dict[str, dict[str, float]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for method in (*METHODS, TARGETS):
        scores: dict[str, float] = {}
        if method in pairs.per_method:
            for key, values in pairs.per_method[method].items():
                v = capped(values)
                ci = bootstrap_mean_ci(v, resampling, ecfg.bootstrap_resamples, ecfg.seed)
                scores.update({key: float(v.mean()), f"{key}_ci95_low": ci.low, f"{key}_ci95_high": ci.high})
        rows = features.get(method, np.zeros((0, 0)))
        if len(rows) < 2:
            continue
        reason = f"reference set: {ref_reason}" if ref_reason else frechet_not_computed_reason(rows)
        if reason is None:
            mu, cov = feature_stats(rows, ecfg.batch_size).mean_cov()
            scores[nets.names.fd] = image_metrics.frechet_distance(mu, cov, mu_r, cov_r)
        else:
            skipped.setdefault(method, {})[nets.names.fd] = reason
        k = kernel_distance(rows, reference, ecfg.kid_subsets, ecfg.kid_subset_size, ecfg.seed)
        scores.update({kid: k.mean, f"{kid}_std": k.std})
        out[method] = {key: float(v) for key, v in sorted(scores.items()) if np.isfinite(v)}
    return Summary(out, skipped)
