"""One evaluation run: reference features, every test pair scored, the protocol recorded, two
documents written atomically (the flat scores DVC compares, ``metrics/<dataset>.json``, and the
evaluation record with protocol and provenance, ``metrics/<dataset>.protocol.json``), plots drawn,
and all of it logged to the training run.

:func:`evaluate_generator` runs the phases in order: :func:`open_test_set`, :func:`reference_set`
(training-image features and the mean image), :func:`score_test_pairs` (generate and score every
pair, in worker processes), :func:`bootstrap_units` (identities), the summaries with intervals
(scoring.summarise, :func:`correspondence_record`, :func:`portrait_scores`), the paired verdicts
against the baselines (:func:`versus_baselines`), the protocol (protocol.py) and
:func:`evaluation_doc`.  :func:`run_evaluation` adds the plots, writes both documents and logs them."""

from __future__ import annotations

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
from datasets.raw.layout import LAYOUTS, identity_of
from datasets.shards.tar import load_manifest
from pipelines.evaluation import correspondence
from pipelines.evaluation.correspondence_plots import plot_flow_examples, plot_part_errors
from pipelines.evaluation.generators import EvaluationError, GeneratorUnderTest
from pipelines.evaluation.landmark_regressor import regressor_path
from pipelines.evaluation.metric_table import lower_is_better
from pipelines.evaluation.networks import Networks, build_networks
from pipelines.evaluation.plots import (
    plot_sample_grid,
    plot_ssim_histogram,
    plot_training_curves,
    training_curves,
    write_per_pair,
)
from pipelines.evaluation.portrait import PortraitResult, evaluate_portrait
from pipelines.evaluation.protocol import (
    correspondence_protocol,
    evaluation_protocol,
    image_metrics_protocol,
    intervals_protocol,
    pairs_protocol,
)
from pipelines.evaluation.scoring import (
    BASELINES,
    TARGETS,
    PairIdentities,
    PairScores,
    PartJob,
    PartResult,
    Summary,
    canonical_sha256,
    capped,
    evaluate_parallel,
    pair_identities,
    stack_rows,
    summarise,
    train_images,
)
from pipelines.evaluation.statistics import (
    IDENTITY_BOOTSTRAP,
    Resampling,
    bootstrap_mean_ci,
    by_identity,
    paired_bootstrap,
)
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import EvaluationRecord, RecordError, protocol_path, write_scores
from pipelines.tracking.journal import journal_path, journal_run_id, tracking_uri
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
    except Exception as exc:  # noqa: BLE001 - the scores are on disk; a tracking outage must not lose them
        log.warning("could not log to MLflow run %s: %s", run_id, redact(str(exc)))
        return False


def load_record(metrics_path: Path) -> EvaluationRecord:
    """The evaluation record (scores, protocol, generator, files) written beside ``metrics_path``."""
    path = protocol_path(metrics_path)
    if not path.is_file():
        raise EvaluationError(
            f"{path} not found; run python -m pipelines.evaluate first (it writes {metrics_path} and {path})"
        )
    try:
        return EvaluationRecord.load(path)
    except RecordError as exc:
        raise EvaluationError(str(exc)) from None


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


# The correspondence scores the model is judged against each baseline on (paired, per pair).
CORRESPONDENCE_VERSUS = (
    ("copy_source", "flow_epe"),
    ("copy_source", "appearance_de00"),
    ("mean_train_image", "appearance_de00"),
)


def correspondence_verdicts(
    part: correspondence.CorrespondencePart, ecfg: Any, resampling: Resampling
) -> dict[str, dict[str, dict]]:
    """:func:`versus_baselines` for the correspondence scores, over the pairs with a value for both."""
    versus: dict[str, dict[str, dict]] = {}
    model = part.per_pair.get("model", {})
    for baseline, metric in CORRESPONDENCE_VERSUS:
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
    return versus


def correspondence_record(
    part: correspondence.CorrespondencePart | None,
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

    record = {
        "available": True,
        "scores": correspondence.summarise(part, interval),
        "versus": correspondence_verdicts(part, ecfg, resampling),
        "protocol": correspondence_protocol(),
        "coverage": {
            "masked_pixels": part.masked_pixels,
            "target_body_pixels": part.body_pixels,
            "share": part.masked_pixels / max(part.body_pixels, 1),
        },
        "epe_by_part": correspondence.part_table(part),
        "appearance_by_garment": correspondence.garment_table(part),
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


@dataclass
class Evaluated:
    doc: dict  # the evaluation record, less the files written from it
    part: PartResult  # per-pair scores, sample grid rows, correspondence details
    started: float  # time.time() when scoring began
    portrait_files: list[Path]  # plots the portrait scoring wrote


# ---------------------------------------------------------------- the phases of one evaluation


@dataclass(frozen=True)
class DatasetUnderTest:
    """The dataset under evaluation: its params section and its shards with their manifest."""

    name: str
    spec: Any  # the datasets.<name> section (layout, task, shards)
    shards: Path | str  # a folder or a URL prefix (s3://…)
    manifest: dict


def open_test_set(cfg: Any, dataset: str) -> DatasetUnderTest:
    """``dataset``'s params section, shards and manifest; a missing manifest is an EvaluationError."""
    spec = cfg.dataset(dataset)
    shards = storage.location(spec.shards)
    try:
        return DatasetUnderTest(dataset, spec, shards, load_manifest(shards))
    except FileNotFoundError as exc:
        raise EvaluationError(str(exc)) from None


@dataclass
class ReferenceSet:
    """The training images as the set-level distances compare against (as the field: every view once)."""

    features: np.ndarray  # [count, feature dimensions], pooled by the Fréchet/kernel network
    mean_image: np.ndarray  # the mean_train_image baseline: per-pixel mean, rounded to uint8
    count: int


def reference_set(test: DatasetUnderTest, nets: Networks, show_progress: bool) -> ReferenceSet:
    """Pooled features of every training image, in chunks of 32, and their per-pixel mean."""
    size = tuple(int(v) for v in test.manifest["image_size"])
    total = np.zeros((*size, 3), np.float64)
    count = 0
    chunk: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    bar = tqdm(desc="reference features", unit="img", disable=not show_progress, dynamic_ncols=True)

    def pool() -> None:
        rows.append(nets.fd.pooled(torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)).float().numpy())
        bar.update(len(chunk))
        chunk.clear()

    for rgb in train_images(test.shards, test.manifest):
        total += rgb
        count += 1
        chunk.append(rgb)
        if len(chunk) == 32:
            pool()
    if chunk:
        pool()
    bar.close()
    if count < 2:
        raise EvaluationError(f"{test.shards}: fewer than 2 training images for the reference statistics")
    return ReferenceSet(stack_rows(rows), np.rint(total / count).astype(np.uint8), count)


def score_test_pairs(
    cfg: Any,
    test: DatasetUnderTest,
    generator: GeneratorUnderTest,
    nets: Networks,
    mean_image: np.ndarray,
    *,
    masked: bool,
    images_out: Path | None,
    with_truth: bool,
    show_progress: bool,
) -> PartResult:
    """Every test pair generated and scored (model, baselines, the targets' features and, with the
    renderer's ground truth, the correspondence scores), split over ``evaluate.workers`` processes."""
    ecfg = cfg.evaluate
    total_pairs = sum(int(s["pairs"]) for s in test.manifest["shards"] if s["split"] == "test")
    workers = max(1, min(ecfg.workers, math.ceil(total_pairs / ecfg.batch_size)))
    jobs = [
        PartJob(
            rank,
            workers,
            str(test.shards),
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
            correspondence=with_truth,
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
    if not part.pairs.names:
        raise EvaluationError("the test split has no pairs")
    return part


def bootstrap_units(
    test: DatasetUnderTest, pair_names: list[tuple[str, str]]
) -> tuple[PairIdentities, Resampling]:
    """The bootstrap's unit: the identity of each pair (its pairs share the person's look and
    difficulty, so they are not independent evidence), or single pairs where none is recorded."""
    layout = LAYOUTS.get(test.spec.layout)
    identity = (lambda name: identity_of(name, layout)) if layout is not None else None
    ids = pair_identities(test.shards, test.manifest, pair_names, identity)
    resampling = by_identity(ids.identities, len(pair_names), ids.missing)
    if resampling.method != IDENTITY_BOOTSTRAP:
        log.warning(
            "%s: intervals resample single test pairs, not identities: %s", test.name, resampling.fallback
        )
    return ids, resampling


def portrait_scores(
    test: DatasetUnderTest,
    generator: GeneratorUnderTest,
    pair_names: list[tuple[str, str]],
    mean_image: np.ndarray,
    images_out: Path | None,
    plots_dir: Path | None,
    landmark_regressor: Path | None,
) -> PortraitResult:
    """Landmark-following error of every method and the editing grid (pipelines/evaluation/portrait.py),
    read back from the images the evaluation wrote."""
    if images_out is None or plots_dir is None:
        raise EvaluationError(
            f"{test.name}: a portrait dataset is scored from the images it writes, with plots"
        )
    return evaluate_portrait(
        generator.fn,
        test.shards,
        test.manifest,
        test.name,
        pair_names,
        images_out,
        mean_image,
        plots_dir,
        landmark_regressor or regressor_path(test.name),
    )


def method_scores(
    summarised: Summary, corr: dict, portrait: PortraitResult | None
) -> dict[str, dict[str, float]]:
    """Each method's scores: the image metrics, then the correspondence scores (taken out of the
    record's section) and the landmark-following error."""
    scores = summarised.scores
    for method, values in corr.pop("scores", {}).items():
        scores.setdefault(method, {}).update(values)
    for method, value in (portrait.scores if portrait is not None else {}).items():
        scores[method]["landmark_nme"] = value
    for method, values in (portrait.edit_scores if portrait is not None else {}).items():
        scores.setdefault(method, {}).update(values)
    return scores


def evaluation_doc(
    test: DatasetUnderTest,
    scores: dict[str, dict[str, float]],
    summarised: Summary,
    nets: Networks,
    pairs: PairScores,
    ids: PairIdentities,
    corr: dict,
    verdicts: dict[str, dict[str, dict]],
    protocol: dict,
    generator: GeneratorUnderTest,
    images_out: Path | None,
) -> dict:
    """The evaluation record: scores by role, what was not computed and why, the verdicts against
    the baselines, per-pair values and identities, the protocol and the generator."""
    return {
        "dataset": test.name,
        "task": test.spec.task,
        "model": scores["model"],
        "baselines": {m: scores[m] for m in BASELINES},
        # What the real held-out targets score: no generator, however good, is expected below it.
        "floor": {TARGETS: scores[TARGETS]} if TARGETS in scores else {},
        "metric_names": {"fd": nets.names.fd, "kid": nets.names.kid, "lpd": nets.names.lpd},
        "not_computed": summarised.not_computed,
        # Does the model beat each baseline beyond noise? Paired bootstrap over the same pairs,
        # resampling identities (protocol.intervals says which units and how many).
        "model_vs_baselines": verdicts,
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
        "manifest_sha256": storage.sha256_of(storage.join(test.shards, "manifest.json")),
        "images_dir": str(images_out) if images_out is not None else None,
    }


def masked_metrics(setting: str, layout: str) -> bool:
    """Whether the masked forms are scored too: ``evaluate.masked_metrics`` always, or auto (Market
    layouts, whose published tables report them)."""
    return setting == "always" or (setting == "auto" and layout == "market")


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
    test = open_test_set(cfg, dataset)
    torch.set_num_threads(ecfg.threads)
    nets = build_networks(ecfg, cfg.loss)
    masked = masked_metrics(ecfg.masked_metrics, test.spec.layout)

    started = time.time()
    reference = reference_set(test, nets, show_progress)
    # None: synthetic test shards that carry the renderer's ground truth.
    no_truth = correspondence.unavailable_reason(test.manifest)
    part = score_test_pairs(
        cfg,
        test,
        generator,
        nets,
        reference.mean_image,
        masked=masked,
        images_out=images_out,
        with_truth=no_truth is None,
        show_progress=show_progress,
    )
    pairs = part.pairs
    ids, resampling = bootstrap_units(test, pairs.names)

    summarised = summarise(pairs, part.features, reference.features, nets, ecfg, resampling)
    corr = correspondence_record(part.correspondence, no_truth, generator, ecfg, resampling)
    portrait = None
    if test.spec.task == "portrait":
        portrait = portrait_scores(
            test, generator, pairs.names, reference.mean_image, images_out, plots_dir, landmark_regressor
        )
    scores = method_scores(summarised, corr, portrait)
    verdicts = merge_verdicts(versus_baselines(pairs.per_method, ecfg, resampling), corr.pop("versus", {}))

    protocol = evaluation_protocol(
        pairs=pairs_protocol(dataset, test.spec.layout, test.manifest, pairs.names),
        image_metrics=image_metrics_protocol(nets, ecfg, int(reference.features.shape[1])),
        intervals=intervals_protocol(resampling, ids, ecfg),
        manifest=test.manifest,
        reference_count=reference.count,
        masked=masked,
        mask_radius=ecfg.mask_radius,
        landmark_following=portrait.protocol if portrait is not None else None,
    )
    doc = evaluation_doc(
        test, scores, summarised, nets, pairs, ids, corr, verdicts, protocol, generator, images_out
    )
    if portrait is not None:
        doc["portrait"] = portrait.details
    return Evaluated(doc, part, started, list(portrait.files) if portrait is not None else [])


def draw_plots(
    plots_dir: Path, dataset: str, generator: GeneratorUnderTest, part: PartResult, corr: dict
) -> list[Path]:
    """The per-pair CSV, SSIM histogram, sample grid and correspondence pictures; their paths."""
    pairs = part.pairs
    per_pair = plots_dir / "per_pair.csv"
    write_per_pair(per_pair, pairs)
    hist = plots_dir / "ssim_hist.png"
    plot_ssim_histogram(hist, pairs, dataset)
    grid_png = plots_dir / "sample_grid.png"
    plot_sample_grid(
        grid_png,
        part.grid,
        f"{dataset}: {generator.info.get('variant', '')} "
        f"{generator.info.get('path') or generator.info.get('uri')}".strip(),
    )
    parts_png, flow_png = plots_dir / "correspondence_parts.png", plots_dir / "correspondence_flow.png"
    plot_part_errors(parts_png, corr, dataset)
    plot_flow_examples(flow_png, part.correspondence.examples if part.correspondence else [], corr, dataset)
    return [per_pair, hist, grid_png, parts_png, flow_png]


def emptied_images_dir(images_out: Path) -> Path:
    """``images_out``, created, without a previous evaluation's images (they must not mix with these)."""
    images_out.mkdir(parents=True, exist_ok=True)
    for old in images_out.glob("*_2_*.png"):
        old.unlink()
    return images_out


def run_evaluation(
    cfg: Any,
    dataset: str,
    generator: GeneratorUnderTest,
    *,
    run: RunFolder | None,
    metrics_path: Path,
    plots_dir: Path,
    log_mlflow: bool = True,
    images_dir: Path | None = None,
    landmark_regressor: Path | None = None,
    show_progress: bool = False,
) -> EvaluationRecord:
    """Evaluate ``generator`` on ``dataset``'s test pairs; write the flat scores to ``metrics_path``
    and the evaluation record to :func:`~pipelines.runs.records.protocol_path` of it; return the
    record. ``run``: the training run whose curves are plotted and whose MLflow entry gets it all.

    Images go to ``images_dir`` (default ``<evaluate.images_dir>/<dataset>``); ``show_progress``
    draws progress bars with ETA on stderr."""
    images_out = emptied_images_dir(images_dir or Path(cfg.evaluate.images_dir) / dataset)
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
    doc = result.doc
    files = (
        draw_plots(plots_dir, dataset, generator, result.part, doc["correspondence"]) + result.portrait_files
    )
    run_id = None
    if run is not None:
        curves_png, curves_csv = plots_dir / "training_curves.png", plots_dir / "training_curves.csv"
        plot_training_curves(
            curves_png,
            curves_csv,
            training_curves(journal_path(run)),
            f"training losses, run {run.name}",
        )
        files += [curves_png, curves_csv]
        # The summary names the MLflow run; a run stopped before writing one has its journal's.
        run_id = run.mlflow_run_id() or journal_run_id(run)
    doc["mlflow_run_id"] = run_id
    doc["plots"] = [str(f) for f in files]
    record_path = protocol_path(metrics_path)
    doc["metrics_file"] = str(metrics_path)
    doc["seconds"] = round(
        time.time() - result.started, 1
    )  # in the record, never among the scores DVC compares
    record = EvaluationRecord.from_dict(doc)
    record.save(record_path)
    write_scores(metrics_path, record.flat_scores())
    if log_mlflow and run_id:
        log_to_mlflow(run_id, dataset, doc, [metrics_path, record_path] + files)
    return record
