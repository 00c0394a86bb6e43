"""One evaluation run: reference features, every test pair scored, the protocol recorded, two
documents written atomically (the flat scores DVC compares, ``metrics/<dataset>.json``, and the
evaluation record with protocol and provenance, ``metrics/<dataset>.protocol.json``), plots drawn,
and all of it logged to the training run."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from datasets import storage
from datasets.files import atomic_write_bytes
from datasets.raw.layout import LAYOUTS, identity_of
from datasets.shards.tar import load_manifest
from model import metrics as M
from pipelines.evaluation import correspondence as C
from pipelines.evaluation.correspondence_plots import plot_flow_examples, plot_part_errors
from pipelines.evaluation.generators import EvaluationError, GeneratorUnderTest
from pipelines.evaluation.landmark_regressor import regressor_path
from pipelines.evaluation.metric_table import lower_is_better
from pipelines.evaluation.networks import build_networks
from pipelines.evaluation.plots import (
    plot_sample_grid,
    plot_ssim_histogram,
    plot_training_curves,
    training_curves,
    write_per_pair,
)
from pipelines.evaluation.portrait import evaluate_portrait
from pipelines.evaluation.scoring import (
    BASELINES,
    TARGETS,
    PartJob,
    PartResult,
    canonical_sha256,
    capped,
    evaluate_parallel,
    pair_identities,
    reference_set_hash,
    stack_rows,
    summarise,
    train_images,
)
from pipelines.evaluation.statistics import (
    CONFIDENCE,
    IDENTITY_BOOTSTRAP,
    Resampling,
    bootstrap_mean_ci,
    by_identity,
    paired_bootstrap,
)
from pipelines.tracking.journal import tracking_uri
from pipelines.tracking.redact import redact

log = logging.getLogger(__name__)


def log_to_mlflow(run_id: str, dataset: str, doc: dict, files: list[Path]) -> bool:
    """Scores and files onto the training run; False (with a warning) when MLflow is unreachable."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri())
        ts = int(time.time() * 1000)
        from mlflow.entities import Metric

        values = [
            Metric(f"eval/{dataset}/{m}/{k}", float(v), ts, 0)
            for m, scores in [("model", doc["model"])]
            + list(doc["baselines"].items())
            + list(doc["floor"].items())
            for k, v in scores.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        client.log_batch(run_id, metrics=values)
        client.set_tag(run_id, f"eval.{dataset}.protocol_sha256", doc["protocol_sha256"])
        for f in files:
            client.log_artifact(run_id, str(f), artifact_path=f"evaluation/{dataset}")
        return True
    except Exception as exc:  # the scores are on disk; a tracking outage must not lose them
        log.warning("could not log to MLflow run %s: %s", run_id, redact(str(exc)))
        return False


def protocol_path(metrics_path: Path) -> Path:
    """Where the evaluation record of ``metrics/<name>.json`` goes: ``metrics/<name>.protocol.json``."""
    return metrics_path.with_name(f"{metrics_path.stem}.protocol.json")


def load_record(metrics_path: Path) -> dict:
    """The evaluation record (scores, protocol, generator, files) written beside ``metrics_path``."""
    path = protocol_path(metrics_path)
    if not path.is_file():
        raise EvaluationError(
            f"{path} not found; run python -m pipelines.evaluate first (it writes {metrics_path} and {path})"
        )
    return json.loads(path.read_text())


def flat_scores(doc: dict) -> dict[str, dict[str, float]]:
    """What ``metrics/<dataset>.json`` holds: per method, only numbers (scores, intervals, KID
    spread), so ``dvc metrics diff`` prints score changes and nothing else."""
    methods = [("model", doc["model"]), *doc["baselines"].items(), *doc["floor"].items()]
    return {
        m: {k: v for k, v in scores.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        for m, scores in methods
    }


def versus_baselines(
    per_method: dict[str, dict[str, list[float]]], ecfg: Any, resampling: Resampling
) -> dict[str, dict[str, dict]]:
    """Per baseline and per-pair metric: the model's gain (signed so that positive is better), its
    paired-bootstrap 95% interval (resampling identities, or pairs where there are none) and
    whether it is beyond noise: better / worse with the whole interval on one side of zero, noise
    when it straddles zero."""
    out: dict[str, dict[str, dict]] = {}
    for baseline in BASELINES:
        for metric, values in per_method["model"].items():
            if metric not in per_method.get(baseline, {}):
                continue
            c = paired_bootstrap(
                capped(values),
                capped(per_method[baseline][metric]),
                lower_is_better(metric),
                resampling,
                ecfg.bootstrap_resamples,
                ecfg.seed,
            )
            out.setdefault(baseline, {})[metric] = c.record()
    return out


def correspondence_record(
    part: C.CorrespondencePart | None,
    no_truth: str | None,
    generator: GeneratorUnderTest,
    ecfg: Any,
    resampling: Resampling,
) -> dict:
    """The correspondence section of the record: ``scores`` (merged into each method's scores by
    the caller), ``versus`` (paired verdicts, merged into model_vs_baselines), per-part and
    per-garment tables and the protocol; or ``available: False`` with why."""
    if part is None:
        return {"available": False, "why": no_truth or "not computed"}

    def interval(v: np.ndarray, keep: np.ndarray) -> tuple[float, float] | None:
        # Only the pairs with a value; with them all from one identity there is no interval.
        units = resampling.subset(keep)
        if units.n_units < 2:
            return None
        ci = bootstrap_mean_ci(v, units, ecfg.bootstrap_resamples, ecfg.seed)
        return ci.low, ci.high

    versus: dict[str, dict[str, dict]] = {}
    model = part.per_pair.get("model", {})
    for baseline, metric in (
        ("copy_source", "flow_epe"),
        ("copy_source", "appearance_de00"),
        ("mean_train_image", "appearance_de00"),
    ):
        if metric not in model:
            continue
        a, b = np.asarray(model[metric]), np.asarray(part.per_pair[baseline][metric])
        ok = np.isfinite(a) & np.isfinite(b)  # pairs with a value for both (EPE: any masked pixel)
        units = resampling.subset(ok)
        if ok.sum() < 2 or units.n_units < 2:
            continue
        c = paired_bootstrap(
            a[ok], b[ok], lower_is_better(metric), units, ecfg.bootstrap_resamples, ecfg.seed
        )
        versus.setdefault(baseline, {})[metric] = c.record()
    record = {
        "available": True,
        "scores": C.summarise(part, interval),
        "versus": versus,
        "protocol": {
            "truth": "renderer part-frame points (datasets/synthetic/groundtruth.py); true flow target->source "
            "to the nearest source pixel of the same part with the nearest point",
            "tolerance_px": C.G.DEFAULT_TOLERANCE_PX,
            "epe": "image pixels; predicted flows upsampled as model.warp.resize_flow; mean over the pair's masked "
            "pixels, then over pairs",
            "attention_location": "softmax-weighted mean of the source cell centres",
            "branch_choice": "combination map > 0.5 = attention; the nearer branch per pixel against the truth",
            "appearance": "CIEDE2000 (skimage) of the mean sRGB colour of output vs target per garment region "
            f"(clean pixels, at least {C.MIN_REGION_PIXELS}); median over regions and pairs",
            "baselines": {"copy_source": "identity flow", "mean_train_image": "no flow: appearance only"},
        },
        "coverage": {
            "masked_pixels": part.masked_pixels,
            "target_body_pixels": part.body_pixels,
            "share": part.masked_pixels / max(part.body_pixels, 1),
        },
        "epe_by_part": C.part_table(part),
        "appearance_by_garment": C.garment_table(part),
        "per_pair": {
            m: {k: [round(float(v), 4) for v in vals] for k, vals in per.items()}
            for m, per in part.per_pair.items()
        },
    }
    if generator.fields is None:
        what = (
            "images read from a folder carry"
            if generator.info.get("source") == "folder"
            else "the generator loaded from a model URI returns"
        )
        record["model_fields"] = (
            f"not exposed: {what} images only, so the model's flow, attention and "
            "branch scores are not available"
        )
    return record


def merge_verdicts(
    a: dict[str, dict[str, dict]], b: dict[str, dict[str, dict]]
) -> dict[str, dict[str, dict]]:
    out = {k: dict(v) for k, v in a.items()}
    for baseline, metrics in b.items():
        out.setdefault(baseline, {}).update(metrics)
    return out


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class Evaluated:
    doc: dict  # the evaluation record, less the files written from it
    part: PartResult  # per-pair scores, sample grid rows, correspondence details
    started: float  # time.time() when scoring began
    portrait_files: list[Path]  # plots the portrait scoring wrote


def evaluate_generator(
    cfg: Any,
    dataset: str,
    generator: GeneratorUnderTest,
    *,
    images_out: Path | None,
    plots_dir: Path | None = None,
    landmark_regressor: Path | None = None,
    show_progress: bool = False,
) -> Evaluated:
    """Score ``generator`` on ``dataset``'s test pairs, with both baselines and the held-out
    targets, under the protocol recorded in the returned record.  The model's images are written
    to ``images_out`` (None: not written); portrait datasets need both folders."""
    ecfg = cfg.evaluate
    spec = cfg.dataset(dataset)
    shards = storage.location(spec.shards)  # a folder or a URL prefix (s3://…)
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
    total = np.zeros((*size, 3), np.float64)
    n_ref = 0
    chunk: list[np.ndarray] = []
    ref_rows: list[np.ndarray] = []
    bar = tqdm(desc="reference features", unit="img", disable=not show_progress, dynamic_ncols=True)
    for rgb in train_images(shards, manifest):
        total += rgb
        n_ref += 1
        chunk.append(rgb)
        if len(chunk) == 32:
            ref_rows.append(
                nets.fd.pooled(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)).float().numpy()
            )
            bar.update(len(chunk))
            chunk = []
    if chunk:
        ref_rows.append(nets.fd.pooled(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)).float().numpy())
        bar.update(len(chunk))
    bar.close()
    if n_ref < 2:
        raise EvaluationError(f"{shards}: fewer than 2 training images for the reference statistics")
    reference = stack_rows(ref_rows)
    mean_image = np.rint(total / n_ref).astype(np.uint8)

    total_pairs = sum(int(s["pairs"]) for s in manifest["shards"] if s["split"] == "test")
    workers = max(1, min(ecfg.workers, math.ceil(total_pairs / ecfg.batch_size)))
    no_truth = C.unavailable_reason(manifest)  # None: synthetic test shards with the renderer's ground truth
    jobs = [
        PartJob(
            rank,
            workers,
            str(shards),
            ecfg.batch_size,
            max(1, ecfg.threads // workers),
            ecfg,
            cfg.loss,
            generator.source,
            mean_image,
            masked,
            str(images_out or ""),
            ecfg.grid_pairs,
            total_pairs if show_progress else 0,
            correspondence=no_truth is None,
        )
        for rank in range(workers)
    ]
    part = evaluate_parallel(jobs, generator, nets)
    torch.set_num_threads(ecfg.threads)
    if part.skipped:
        raise EvaluationError(
            f"{part.skipped} test samples could not be read ({part.errors[-1:]}); "
            "scores would not cover every pair"
        )
    pairs = part.pairs
    if not pairs.names:
        raise EvaluationError("the test split has no pairs")
    # The bootstrap's unit: the identity of each pair (its pairs share the person's look and
    # difficulty, so they are not independent evidence), or single pairs where none is recorded.
    layout = LAYOUTS.get(spec.layout)
    ids = pair_identities(
        shards,
        manifest,
        pairs.names,
        (lambda name: identity_of(name, layout)) if layout is not None else None,
    )
    resampling = by_identity(ids.identities, len(pairs.names), ids.missing)
    if resampling.method != IDENTITY_BOOTSTRAP:
        log.warning(
            "%s: intervals resample single test pairs, not identities: %s", dataset, resampling.fallback
        )
    summarised = summarise(pairs, part.features, reference, nets, ecfg, resampling)
    scores = summarised.scores
    corr = correspondence_record(part.correspondence, no_truth, generator, ecfg, resampling)
    for method, values in corr.pop("scores", {}).items():
        scores.setdefault(method, {}).update(values)
    portrait = None
    if spec.task == "portrait":
        if images_out is None or plots_dir is None:
            raise EvaluationError(
                f"{dataset}: a portrait dataset is scored from the images it writes, with plots"
            )
        # Landmark-following error of every method and the editing grid (pipelines/evaluation/portrait.py).
        portrait = evaluate_portrait(
            generator.fn,
            shards,
            manifest,
            dataset,
            pairs.names,
            images_out,
            mean_image,
            plots_dir,
            landmark_regressor or regressor_path(dataset),
        )
        for method, value in portrait.scores.items():
            scores[method]["landmark_nme"] = value

    protocol = {
        "dataset": dataset,
        "layout": spec.layout,
        "pairs": len(pairs.names),
        "pairs_order": "test pairs CSV order",
        "pairs_sha256": canonical_sha256(pairs.names),
        "image_size": list(size),
        "resize": (
            f"images resized to {size[0]}x{size[1]} with cv2 INTER_AREA at preprocessing when their size "
            f"differs; generated at that size; no resize before the metrics"
        ),
        "targets": f"test images as stored in the shards (JPEG, preprocess.jpeg_quality "
        f"{manifest.get('preprocess', {}).get('jpeg_quality')}), decoded to uint8",
        "file_format": "png (lossless): scores are computed on the uint8 pixels written",
        # The published tables' SSIM (PG2 -> PATN -> GFLA script/metrics.py) and the fixed-range one.
        "ssim": {
            "gaussian_weights": True,
            "sigma": M.SSIM_SIGMA,
            "use_sample_covariance": False,
            "data_range": "generated.max() - generated.min() per image (the field's scripts; 1 if constant)",
            "channels": "all three at once (multichannel)",
            "equals": "skimage.metrics.structural_similarity",
        },
        "ssim_range255": {
            "gaussian_weights": True,
            "sigma": M.SSIM_SIGMA,
            "use_sample_covariance": False,
            "data_range": 255,
            "channels": "mean over RGB",
            "equals": "skimage.metrics.structural_similarity",
        },
        "psnr": {"data_range": 255, "average": "mean of per-image PSNR"},
        "feature_extractors": nets.description,
        "lpips": (
            {"net": ecfg.lpips_net, "model": "net-lin v0.1", "metric": nets.names.lpd}
            if getattr(nets.lpd, "is_reference", False)
            else {
                "net": None,
                "metric": nets.names.lpd,
                "why": f"no LPIPS weights for evaluate.lpips_net={ecfg.lpips_net}; the backbone's unweighted "
                "distance is reported under its own name",
            }
        ),
        "frechet": {
            "rule": "computed only when the distinct images outnumber the feature dimensions",
            "feature_dimensions": int(reference.shape[1]),
        },
        "kid": {
            "metric": nets.description["fd"]["kid_metric"],
            "kernel": "(x.y / d + 1)^3",
            "estimator": "unbiased MMD^2",
            "subsets": ecfg.kid_subsets,
            "subset_size": f"min({ecfg.kid_subset_size}, rows of each side)",
            "seed": ecfg.seed,
            "spread": "<metric>_std: standard deviation over the subsets",
        },
        # method ("identity bootstrap", or "pair bootstrap" with the fallback's reason), pairs,
        # identities and units: what the intervals and the paired verdicts resample.
        "intervals": {
            "per_pair_means": f"percentile bootstrap {CONFIDENCE:.0%} interval, <metric>_ci95_low/_high",
            "paired": "model minus baseline per pair, bootstrapped with the same units",
            "unit": (
                "an identity: every pair of a drawn identity comes along"
                if resampling.method == IDENTITY_BOOTSTRAP
                else "a single test pair"
            ),
            "identity_of_pair": "the source image's identity as the test shards record it (sample "
            "meta.json; pairs join views of one identity)",
            "cross_identity_pairs": ids.cross_identity_pairs,
            **resampling.record(),
            "resamples": ecfg.bootstrap_resamples,
            "seed": ecfg.seed,
            "psnr_inf": "capped at 100 dB, as the mean",
        },
        "reference_set": {
            "what": "training images, every view once (as the field's FID)",
            "count": n_ref,
            "sha256": reference_set_hash(manifest),
        },
        "masked": {
            "enabled": masked,
            "mask": "PATN body mask from the target keypoints (limb quads, joint discs, "
            "5x5 closing), pixels outside zeroed in both images",
            "radius": ecfg.mask_radius,
        }
        if masked
        else {"enabled": False},
        "heatmap_sigma": manifest.get("preprocess", {}).get("heatmap_sigma"),
        "baselines": {
            "copy_source": "the source image unchanged",
            "mean_train_image": f"per-pixel mean of the {n_ref} training images, rounded to uint8",
        },
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
        "metric_names": {
            "fd": nets.names.fd,
            "kid": nets.names.kid,
            "lpd": nets.names.lpd,
        },
        "not_computed": summarised.not_computed,
        # Does the model beat each baseline beyond noise? Paired bootstrap over the same pairs,
        # resampling identities (protocol.intervals says which units and how many).
        "model_vs_baselines": merge_verdicts(
            versus_baselines(pairs.per_method, ecfg, resampling), corr.pop("versus", {})
        ),
        # Flows and appearance against the renderer's ground truth (or why not available).
        "correspondence": corr,
        # Per-pair values of every method (pair order of the protocol): the paired bootstrap against
        # the registry's champion reads them back from the registered model.
        "per_pair": {
            m: {k: [round(float(v), 6) for v in vals] for k, vals in per.items()}
            for m, per in pairs.per_method.items()
        },
        "pair_names": [list(n) for n in pairs.names],  # (source, target) of each pair, in pair order
        # Each pair's identity (pair order; "" where none, None when the shards record none): the
        # registry's paired bootstrap against the champion resamples the same identities.
        "pair_identity": ids.identities,
        "protocol": protocol,
        "protocol_sha256": canonical_sha256(protocol),
        "generator": generator.info,
        "manifest_sha256": storage.sha256_of(storage.join(shards, "manifest.json")),
        "images_dir": str(images_out) if images_out is not None else None,
    }
    if portrait is not None:
        doc["portrait"] = portrait.details
    return Evaluated(doc, part, t0, list(portrait.files) if portrait is not None else [])


def run_evaluation(
    cfg: Any,
    dataset: str,
    generator: GeneratorUnderTest,
    *,
    run_dir: Path | None,
    metrics_path: Path,
    plots_dir: Path,
    log_mlflow: bool = True,
    images_dir: Path | None = None,
    landmark_regressor: Path | None = None,
    show_progress: bool = False,
) -> dict:
    """Evaluate ``generator`` on ``dataset``'s test pairs; write the flat scores to ``metrics_path``
    and the evaluation record to :func:`protocol_path` of it; return the record.

    Images go to ``images_dir`` (default ``<evaluate.images_dir>/<dataset>``); ``show_progress``
    draws progress bars with ETA on stderr."""
    images_out = images_dir or Path(cfg.evaluate.images_dir) / dataset
    images_out.mkdir(parents=True, exist_ok=True)
    for old in images_out.glob("*_2_*.png"):
        old.unlink()  # a previous evaluation's images must not mix with this one's
    plots_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate_generator(
        cfg,
        dataset,
        generator,
        images_out=images_out,
        plots_dir=plots_dir,
        landmark_regressor=landmark_regressor,
        show_progress=show_progress,
    )
    doc, part = result.doc, result.part
    pairs, grid, corr = part.pairs, part.grid, doc["correspondence"]

    per_pair = plots_dir / "per_pair.csv"
    write_per_pair(per_pair, pairs)
    hist = plots_dir / "ssim_hist.png"
    plot_ssim_histogram(hist, pairs, dataset)
    grid_png = plots_dir / "sample_grid.png"
    plot_sample_grid(
        grid_png,
        grid,
        f"{dataset}: {generator.info.get('variant', '')} "
        f"{generator.info.get('path') or generator.info.get('uri')}".strip(),
    )
    parts_png, flow_png = plots_dir / "correspondence_parts.png", plots_dir / "correspondence_flow.png"
    plot_part_errors(parts_png, corr, dataset)
    plot_flow_examples(flow_png, part.correspondence.examples if part.correspondence else [], corr, dataset)
    files = [per_pair, hist, grid_png, parts_png, flow_png] + result.portrait_files
    summary: dict = {}
    if run_dir is not None:
        curves_png, curves_csv = plots_dir / "training_curves.png", plots_dir / "training_curves.csv"
        plot_training_curves(
            curves_png,
            curves_csv,
            training_curves(run_dir / "tracking" / "journal.jsonl"),
            f"training losses, run {run_dir.name}",
        )
        files += [curves_png, curves_csv]
        if (run_dir / "summary.json").is_file():
            summary = json.loads((run_dir / "summary.json").read_text())
    run_id = summary.get("mlflow_run_id")
    if run_id is None and run_dir is not None and (run_dir / "tracking" / "cursor.json").is_file():
        run_id = json.loads((run_dir / "tracking" / "cursor.json").read_text()).get("run_id")
    doc["mlflow_run_id"] = run_id
    doc["plots"] = [str(f) for f in files]
    record = protocol_path(metrics_path)
    doc["metrics_file"] = str(metrics_path)
    doc["seconds"] = round(
        time.time() - result.started, 1
    )  # in the record, never among the scores DVC compares
    write_json(record, doc)
    write_json(metrics_path, flat_scores(doc))
    if log_mlflow and run_id:
        log_to_mlflow(run_id, dataset, doc, [metrics_path, record] + files)
    return doc
