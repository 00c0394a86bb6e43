"""Raw dataset (field layout) -> validated WebDataset shards: what the ``preprocess`` stage runs.

The whole output folder is built under a staging name and swapped in at the end, so an
interrupted run leaves the previous output intact; ``manifest.json`` lists every shard with its
sha256 and ``rejects.csv`` every dropped input with its reason.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from datasets.files import atomic_write_bytes, fsync_dir, replace_dir
from datasets.pose.scheme import PoseScheme, scheme_for
from datasets.raw.layout import SPLITS, LayoutError, get_layout
from datasets.raw.validate import Reject, SplitResult, count_universe, identity_leaks, validate_dataset
from datasets.shards.samples import encode_view, meta_json, test_samples, train_groups
from datasets.shards.tar import ShardWriter
from datasets.sheets.shard_sheet import shard_sheet
from datasets.specs import DatasetSpec, PreprocessConfig

log = logging.getLogger(__name__)


FORMAT_VERSION = 1


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
                    f"preprocess.max_reject_fraction={limit:g}; most common: {top}")


def write_split(res: SplitResult, spec: DatasetSpec, cfg: PreprocessConfig, out: Path,
                show_progress: bool, scheme: PoseScheme) -> tuple[list, dict[str, int]]:
    """Write one split's shards; returns the shard infos and extra counts."""
    samples = train_groups(res.images, res.pairs) if res.split == "train" else test_samples(res.images, res.pairs)
    cache: dict[str, tuple[list[tuple[str, bytes]], bool]] = {}
    no_face: set[str] = set()
    bar = _bar(sum(len(n) for n, _ in samples), f"write {res.split}", show_progress)
    with ShardWriter(out, res.split, cfg.shard_size) as writer:
        for index, (names, pairs) in enumerate(samples):
            members = [("meta.json", meta_json(res.split, names, pairs, res.images, spec.image_size))]
            for v, name in enumerate(names):
                if name not in cache:
                    cache[name] = encode_view(res.images[name], spec.image_size, cfg.heatmap_sigma,
                                              cfg.face_size, cfg.jpeg_quality, scheme)
                files, has_face = cache[name]
                if not has_face:
                    no_face.add(name)
                members.extend((f"v{v}.{ext}", data) for ext, data in files)
                bar.update(1)
            if res.split == "train":
                cache.clear()  # a training image is in exactly one group
            writer.write(f"{index:06d}", members, images=len(names), pairs=len(pairs))
        shards = writer.close()
    bar.close()
    return shards, {"samples": len(samples), "faces_missing": len(no_face)}


def preprocess(name: str, spec: DatasetSpec, cfg: PreprocessConfig, out: Path,
               figure: Path | None = None, metrics: Path | None = None, show_progress: bool = True) -> dict:
    """Validate a raw dataset and write its shards into ``out`` (swapped in whole); returns the manifest.
    Raises LayoutError / RejectFractionError.

    The dataset's task picks the pose scheme (body heatmaps or portrait part maps, and the
    face box rule); ``datasets.<name>.pose_sigma`` replaces ``preprocess.heatmap_sigma`` for
    this dataset, and the manifest records the value used.
    """
    layout = get_layout(spec.layout)
    scheme = scheme_for(spec.task)
    if scheme.num_keypoints != layout.num_keypoints:
        raise LayoutError(f"datasets.{name}: task {spec.task!r} uses {scheme.num_keypoints} keypoints "
                          f"({scheme.name}) but layout {spec.layout!r} has {layout.num_keypoints}")
    if spec.pose_sigma is not None:
        cfg = replace(cfg, heatmap_sigma=spec.pose_sigma)
    bar = _bar(count_universe(spec, layout), "validate", show_progress)
    results = validate_dataset(spec, layout, cfg, name, progress=bar.update)
    bar.close()
    all_rejects = [r for res in results.values() for r in res.rejects]
    try:
        check_fractions(results, cfg.max_reject_fraction)
    except RejectFractionError:
        failed = out.parent / f"{out.name}.rejects-failed.csv"
        atomic_write_bytes(failed, rejects_csv(all_rejects))
        log.error("the rejected inputs are listed in %s", failed)
        raise

    out = Path(out)
    staging = out.parent / f".{out.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir(parents=True)
    shards, splits = [], {}
    for split in SPLITS:
        res = results[split]
        written, extra = write_split(res, spec, cfg, staging, show_progress, scheme)
        shards.extend(written)
        splits[split] = {**res.counts, **extra, "shards": len(written), "source": {
            "images": str(res.files.image_dir.relative_to(spec.root)),
            "annotations": res.files.annotation_csv.name, "pairs": res.files.pairs_csv.name}}
    leaks = identity_leaks(results)
    manifest = {
        "dataset": name,
        "format_version": FORMAT_VERSION,
        "layout": spec.layout,
        "task": spec.task,
        "image_size": list(spec.image_size),
        "source_size": list(spec.source_size),
        "num_keypoints": get_layout(spec.layout).num_keypoints,
        "pose_scheme": scheme.name,
        "pose_channels": scheme.num_channels,
        "pose_channel_names": list(scheme.channel_names),
        "preprocess": json.loads(json.dumps(asdict(cfg))),  # tuples as lists
        "splits": splits,
        "identities_in_both_splits": {"count": len(leaks), "examples": leaks[:20]},
        "shards": [s.as_dict() for s in shards],
    }
    atomic_write_bytes(staging / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(staging / "rejects.csv", rejects_csv(all_rejects))
    fsync_dir(staging)
    replace_dir(staging, out)

    if metrics is not None:
        counts = {s: {k: v for k, v in d.items() if isinstance(v, int)} for s, d in splits.items()}
        body = {"dataset": name, "splits": counts, "identities_in_both_splits": len(leaks),
                "shards": len(shards), "bytes": sum(s.bytes for s in shards)}
        atomic_write_bytes(metrics, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
    if figure is not None:
        train = [out / s.name for s in shards if s.split == "train"] or [out / s.name for s in shards]
        if train:
            shard_sheet(train, figure, spec.image_size)
    return manifest
