"""Raw dataset (field layout) -> validated WebDataset shards: what the ``preprocess`` stage runs.

Validation of the tables comes first (here), then a plan of shards (``datasets.shards.jobs``)
that N Ray workers, or this process, carry out; the manifest and rejects are written last.
A local output folder is built under a staging name and swapped in at the end, so an
interrupted run leaves the previous output intact; on an object store the manifest is removed
first and written last.  ``manifest.json`` lists every shard with its sha256 and ``rejects.csv``
every dropped input with its reason.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from datasets import storage
from datasets.files import atomic_write_bytes, fsync_dir, replace_dir
from datasets.parallel import ordered_map
from datasets.pose.scheme import PoseScheme, scheme_for
from datasets.raw.layout import SPLITS, LayoutError, LayoutSpec, get_layout
from datasets.raw.validate import Reject, SplitResult, count_universe, identity_leaks, validate_dataset
from datasets.shards.jobs import ShardJob, ShardResult, plan_shards, write_shard
from datasets.shards.tar import ShardInfo
from datasets.sheets.shard_sheet import shard_sheet
from datasets.specs import DatasetSpec, PreprocessConfig

log = logging.getLogger(__name__)


# 2: test views may carry the renderer's ground truth (vN.gt.npz); manifest "groundtruth".
FORMAT_VERSION = 2
# How a run is executed, not what it produces: left out of the manifest, which is the same bytes
# for any value of these.
RUN_ONLY_PARAMS = ("workers",)


class RejectFractionError(RuntimeError):
    """More of a split was rejected than preprocess.max_reject_fraction allows."""


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr, leave=False)


def rejects_csv(rejects: list[Reject]) -> bytes:
    order = {s: i for i, s in enumerate(SPLITS)}
    rows = sorted(rejects, key=lambda r: (order.get(r.split, 99), r.kind, r.name, r.reason))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["split", "kind", "name", "reason"])
    writer.writerows([r.split, r.kind, r.name, r.reason] for r in rows)
    return buf.getvalue().encode("utf-8")


def check_fractions(results: dict[str, SplitResult], limit: float) -> None:
    """Raise :class:`RejectFractionError` naming the split, kind and top reasons when over ``limit``."""
    for split, res in results.items():
        for kind in ("images", "pairs"):
            total, bad = res.counts[f"{kind}_in"], res.counts[f"{kind}_rejected"]
            if total and bad / total > limit:
                reasons = Counter(r.reason.split(":")[0] for r in res.rejects if r.kind == kind[:-1])
                top = ", ".join(f"{n}× {reason}" for reason, n in reasons.most_common(3))
                raise RejectFractionError(
                    f"{split}: {bad} of {total} {kind} rejected ({bad / total:.1%}) > "
                    f"preprocess.max_reject_fraction={limit:g}; most common: {top}"
                )


def _apply(res: SplitResult, outs: list[ShardResult]) -> tuple[list[ShardInfo], dict[str, int]]:
    """Fold the jobs' file checks back into the split's result: drop the images that failed,
    add their rejects and those of the pairs using them, recount; returns the shards written and
    the extra counts (samples, faces missing)."""
    bad: dict[str, str] = {}
    for out in outs:
        bad.update(out.rejected_images)  # a test image in two shards fails the same way in both
    for name in sorted(bad):
        res.images.pop(name, None)
        res.counts["joints_outside_frame"] -= res.outside.pop(name, 0)
    res.rejects.extend(Reject(res.split, "image", name, bad[name]) for name in sorted(bad))
    pair_rejects = [r for out in outs for r in out.rejected_pairs]
    res.rejects.extend(pair_rejects)
    res.pairs = [p for p in res.pairs if p.source not in bad and p.target not in bad]
    res.counts["images_written"] = len(res.images)
    res.counts["images_rejected"] += len(bad)
    res.counts["pairs_written"] = len(res.pairs)
    res.counts["pairs_rejected"] += len(pair_rejects)
    shards = [out.shard for out in outs if out.shard is not None]
    no_face = {n for out in outs for n in out.no_face}
    return shards, {"samples": sum(s.samples for s in shards), "faces_missing": len(no_face)}


def _fail_on_fractions(results: dict[str, SplitResult], limit: float, out: str) -> None:
    """check_fractions, writing every reject next to the output first when it fails."""
    try:
        check_fractions(results, limit)
    except RejectFractionError:
        failed = f"{out.rstrip('/')}.rejects-failed.csv"
        storage.write_bytes(failed, rejects_csv([r for res in results.values() for r in res.rejects]))
        log.error("the rejected inputs are listed in %s", storage.safe_url(failed))
        raise


def _prepare_remote(out: str) -> None:
    """Object stores have no folder rename: take the old manifest away first (readers then see no
    dataset rather than a manifest naming objects about to be replaced), then the old shards."""
    storage.remove(storage.join(out, "manifest.json"))
    for name in storage.list_names(out):
        if name.endswith(".tar") or name == "rejects.csv":
            storage.remove(storage.join(out, name))


@dataclass(frozen=True)
class _Output:
    """Where a run writes: ``out`` as given and, for a local folder, the staging sibling it builds."""

    out: str
    remote: bool
    target: str  # where the shard jobs write: ``out`` itself, or the staging folder
    staging: Path | None = None
    final: Path | None = None


def preprocess(
    name: str,
    spec: DatasetSpec,
    cfg: PreprocessConfig,
    out: str | Path,
    figure: Path | None = None,
    metrics: Path | None = None,
    show_progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Validate a raw dataset and write its shards into ``out``; returns the manifest.
    Raises LayoutError / RejectFractionError.

    ``out`` is a local folder (built as a hidden staging sibling and swapped in whole) or a URL
    prefix (``s3://bucket/shards/NAME``: the shards are written as objects and ``manifest.json``
    last, see :mod:`datasets.storage`).  ``workers`` (default ``cfg.workers``) Ray workers validate
    and write the planned shards (:mod:`datasets.shards.jobs`); 0 runs them here.  The output is
    the same bytes for any number of workers.

    The dataset's task picks the pose scheme (body heatmaps or portrait part maps, and the
    face box rule); ``datasets.<name>.pose_sigma`` and ``shard_size`` replace
    ``preprocess.heatmap_sigma`` and ``shard_size`` for this dataset, and the manifest records the
    values used.
    """
    workers = cfg.workers if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    layout = get_layout(spec.layout)
    scheme = scheme_for(spec.task)
    cfg = _dataset_config(name, spec, cfg, layout, scheme)
    bar = _bar(count_universe(spec, layout), "validate", show_progress)
    # The image files are checked by the shard jobs as they decode them (one decode per image).
    results = validate_dataset(spec, layout, cfg, name, progress=bar.update, check_files=False)
    bar.close()
    output = _open_output(str(out), results, cfg.max_reject_fraction)
    jobs = {split: plan_shards(name, spec, cfg, results[split], output.target) for split in SPLITS}
    plan = [job for split in SPLITS for job in jobs[split]]
    done = ordered_map(write_shard, plan, workers=workers, desc="write shards", progress=show_progress)
    shards, splits = _fold_shard_results(spec, results, jobs, done)
    all_rejects = [r for res in results.values() for r in res.rejects]
    _fail_or_discard(results, cfg.max_reject_fraction, output, shards)
    leaks = identity_leaks(results)
    manifest = _manifest(name, spec, cfg, layout, scheme, splits, leaks, shards, done)
    _publish(output, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), all_rejects)
    if metrics is not None:
        _write_metrics(metrics, name, splits, leaks, shards)
    if figure is not None:
        _write_figure(figure, output.out, shards, spec)
    return manifest


def _dataset_config(
    name: str, spec: DatasetSpec, cfg: PreprocessConfig, layout: LayoutSpec, scheme: PoseScheme
) -> PreprocessConfig:
    """``cfg`` with the dataset's own pose sigma and shard size; the scheme must fit the layout."""
    if scheme.num_keypoints != layout.num_keypoints:
        raise LayoutError(
            f"datasets.{name}: task {spec.task!r} uses {scheme.num_keypoints} keypoints "
            f"({scheme.name}) but layout {spec.layout!r} has {layout.num_keypoints}"
        )
    if spec.pose_sigma is not None:
        cfg = replace(cfg, heatmap_sigma=spec.pose_sigma)
    if spec.shard_size is not None:
        cfg = replace(cfg, shard_size=spec.shard_size)
    return cfg


def _open_output(out: str, results: dict[str, SplitResult], limit: float) -> _Output:
    """Make ``out`` ready for the shard jobs: a bucket prefix emptied, a local staging folder made."""
    if storage.is_url(out):
        # Rejects only grow once the files are checked, so data whose tables alone are over the
        # limit fails here, before anything in the bucket is touched (a local run needs no such
        # step: its previous output stays intact behind the staging folder whatever happens).
        _fail_on_fractions(results, limit, out)
        _prepare_remote(out)
        return _Output(out, remote=True, target=out)
    final = storage.local_path(out)
    staging = final.parent / f".{final.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir(parents=True)
    return _Output(out, remote=False, target=str(staging.resolve()), staging=staging, final=final)


def _fold_shard_results(
    spec: DatasetSpec,
    results: dict[str, SplitResult],
    jobs: dict[str, list[ShardJob]],
    done: list[ShardResult],
) -> tuple[list[ShardInfo], dict[str, dict]]:
    """The shards written, and each split's manifest entry once its jobs' file checks are in."""
    shards: list[ShardInfo] = []
    splits: dict[str, dict] = {}
    at = 0
    for split in SPLITS:
        res = results[split]
        written, extra = _apply(res, done[at : at + len(jobs[split])])
        at += len(jobs[split])
        shards.extend(written)
        splits[split] = {
            **res.counts,
            **extra,
            "shards": len(written),
            "source": {
                "images": str(res.files.image_dir.relative_to(spec.root)),
                "annotations": res.files.annotation_csv.name,
                "pairs": res.files.pairs_csv.name,
            },
        }
    return shards, splits


def _fail_or_discard(
    results: dict[str, SplitResult], limit: float, output: _Output, shards: list[ShardInfo]
) -> None:
    """_fail_on_fractions, removing what the jobs wrote when it fails."""
    try:
        _fail_on_fractions(results, limit, output.out)
    except RejectFractionError:
        if output.remote:  # nothing lists them: remove what the jobs wrote
            for s in shards:
                storage.remove(storage.join(output.out, s.name))
        else:
            assert output.staging is not None
            shutil.rmtree(output.staging, ignore_errors=True)
        raise


def _manifest(
    name: str,
    spec: DatasetSpec,
    cfg: PreprocessConfig,
    layout: LayoutSpec,
    scheme: PoseScheme,
    splits: dict[str, dict],
    leaks: list[str],
    shards: list[ShardInfo],
    done: list[ShardResult],
) -> dict:
    recorded = {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY_PARAMS}
    manifest = {
        "dataset": name,
        "format_version": FORMAT_VERSION,
        "layout": spec.layout,
        "task": spec.task,
        "image_size": list(spec.image_size),
        "source_size": list(spec.source_size),
        "num_keypoints": layout.num_keypoints,
        "pose_scheme": scheme.name,
        "pose_channels": scheme.num_channels,
        "pose_channel_names": list(scheme.channel_names),
        "preprocess": json.loads(json.dumps(recorded)),  # tuples as lists
        "splits": splits,
        "identities_in_both_splits": {"count": len(leaks), "examples": leaks[:20]},
        "shards": [s.as_dict() for s in shards],
        "groundtruth": {
            "test_sample_views": sum(out.groundtruth for out in done),
            "member": "vN.gt.npz (datasets/synthetic/groundtruth.py) in test samples",
        },
    }
    edits = sum(out.true_edits for out in done)
    if edits:  # only portrait sets have them: the other manifests keep their bytes
        manifest["true_edits"] = {
            "test_sample_views": edits,
            "member": "vN.edits.npz (datasets/synthetic/portrait_true_edits.py) in test samples",
        }
    return manifest


def _publish(output: _Output, manifest_bytes: bytes, rejects: list[Reject]) -> None:
    """Write rejects.csv and manifest.json, then make the output visible as a whole."""
    if output.remote:
        # Every shard object is complete (one PUT each) before the object that lists them exists.
        storage.write_bytes(storage.join(output.out, "rejects.csv"), rejects_csv(rejects))
        storage.write_bytes(storage.join(output.out, "manifest.json"), manifest_bytes)
        return
    staging, final = output.staging, output.final
    assert staging is not None and final is not None
    for leftover in staging.glob(".*.partial"):  # a killed attempt of a job that was re-run
        leftover.unlink()
    atomic_write_bytes(staging / "manifest.json", manifest_bytes)
    atomic_write_bytes(staging / "rejects.csv", rejects_csv(rejects))
    fsync_dir(staging)
    replace_dir(staging, final)


def _write_metrics(
    metrics: Path, name: str, splits: dict[str, dict], leaks: list[str], shards: list[ShardInfo]
) -> None:
    counts = {s: {k: v for k, v in d.items() if isinstance(v, int)} for s, d in splits.items()}
    body = {
        "dataset": name,
        "splits": counts,
        "identities_in_both_splits": len(leaks),
        "shards": len(shards),
        "bytes": sum(s.bytes for s in shards),
    }
    atomic_write_bytes(metrics, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def _write_figure(figure: Path, out: str, shards: list[ShardInfo], spec: DatasetSpec) -> None:
    """A contact sheet of the train shards (of every shard when there are none)."""
    train = [storage.join(out, s.name) for s in shards if s.split == "train"] or [
        storage.join(out, s.name) for s in shards
    ]
    if train:
        shard_sheet(train, figure, spec.image_size)
