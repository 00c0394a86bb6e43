"""One evaluation run: reference statistics, every test pair scored, the protocol recorded, the
metrics document written atomically, plots drawn, and all of it logged to the training run."""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.files import file_sha256
from datasets.shards.tar import load_manifest
from model import metrics as M
from pipelines.evaluation.generators import EvaluationError, GeneratorUnderTest
from pipelines.evaluation.landmark_regressor import regressor_path
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
    canonical_sha256,
    evaluate_parallel,
    reference_set_hash,
    summarise,
    train_images,
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

        values = [Metric(f"eval/{dataset}/{m}/{k}", float(v), ts, 0)
                  for m, scores in [("model", doc["model"])] + list(doc["baselines"].items()) + list(doc["floor"].items())
                  for k, v in scores.items() if math.isfinite(float(v))]
        client.log_batch(run_id, metrics=values)
        client.set_tag(run_id, f"eval.{dataset}.protocol_sha256", doc["protocol_sha256"])
        for f in files:
            client.log_artifact(run_id, str(f), artifact_path=f"evaluation/{dataset}")
        return True
    except Exception as exc:  # the scores are on disk; a tracking outage must not lose them
        log.warning("could not log to MLflow run %s: %s", run_id, redact(str(exc)))
        return False


def run_evaluation(cfg: Any, dataset: str, generator: GeneratorUnderTest, *, run_dir: Path | None,
                   metrics_path: Path, plots_dir: Path, log_mlflow: bool = True,
                   images_dir: Path | None = None, landmark_regressor: Path | None = None) -> dict:
    """Evaluate ``generator`` on ``dataset``'s test pairs; write and return the metrics document.

    Images go to ``images_dir`` (default ``<evaluate.images_dir>/<dataset>``)."""
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
        # Landmark-following error of every method and the editing grid (pipelines/evaluation/portrait.py).
        portrait = evaluate_portrait(generator.fn, shards, manifest, dataset, pairs.names, images_out, mean_image,
                                     plots_dir, landmark_regressor or regressor_path(dataset))
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
