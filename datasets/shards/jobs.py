"""The preprocess stage cut into shard jobs: a plan made before any worker starts, and the job.

:func:`plan_shards` turns one split's validated tables (names, rows, pairs: everything the CSVs
and the folder listing decide) into :class:`ShardJob` s: which samples, with which images, make
shard ``split-NNNNNN.tar``.  The plan depends only on the data and the params, never on how many
workers run it or which finishes first, so any worker count gives the same bytes.

:func:`write_shard` is one job, the same function in-process and on a Ray worker: each image is
read and decoded once, which both checks it (unreadable, truncated, wrong size or mode…) and gives
the pixels it is encoded from.  An image that fails is dropped from its sample, the pairs that use
it are rejected with its reason, and the rest of the sample is still written (a view left without
pairs stays an accepted, written image).  The shard goes to a hidden partial name and is renamed
(local) or sent as one object (object store); the job returns its manifest entry and rejects, and
the driver writes ``rejects.csv`` and ``manifest.json`` after every job has finished.

Test views of a synthetic dataset also carry the renderer's ground truth (``vN.gt.npz``, from
``<root>/groundtruth/test/``, :mod:`datasets.synthetic.groundtruth`) when it matches the stored
image size; training samples never do, so training shards do not depend on it.  Test views of
a synthetic portrait set also carry the renderer's true edits (``vN.edits.npz``,
:mod:`datasets.synthetic.portrait_true_edits`) under the same rule, once per view: with the first
test sample (in pair order) that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from datasets.pose.scheme import scheme_for
from datasets.raw.layout import PairRow
from datasets.raw.validate import ImageRecord, Reject, SplitResult, load_image
from datasets.shards.samples import encode_view, meta_json, test_samples, train_groups
from datasets.shards.tar import ShardInfo, ShardWriter
from datasets.specs import DatasetSpec, PreprocessConfig
from datasets.synthetic import groundtruth, portrait_true_edits


@dataclass(frozen=True)
class ShardJob:
    """One planned shard: its samples (view names, pairs) and the records of their images."""

    dataset: str
    spec: DatasetSpec
    cfg: PreprocessConfig
    split: str
    index: int  # shard number within the split
    first_key: int  # sample number (the tar key) of its first sample
    samples: tuple[tuple[tuple[str, ...], tuple[PairRow, ...]], ...]
    records: dict[str, ImageRecord]
    pairs_csv: str  # for pair rejects' "(file line N)"
    out: str  # absolute staging folder or URL prefix
    root: str = ""  # the raw dataset's folder, absolute (the test ground truth is read beside it)
    # Test views whose true edits this shard carries: each view's edits travel once, with the
    # view's first sample in the split, not with each of the pairs it is in.
    edit_views: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ShardResult:
    """What a job reports back: its shard (None when nothing in it survived) and what it dropped."""

    shard: ShardInfo | None
    rejected_images: dict[str, str]  # name -> reason, from the file checks while decoding
    rejected_pairs: tuple[Reject, ...]
    no_face: tuple[str, ...]  # written images without a face box
    decodes: int  # images decoded by this job
    groundtruth: int = 0  # written views carrying the renderer's ground truth
    true_edits: int = 0  # written views carrying the renderer's true edits (portraits)


def plan_shards(
    dataset: str, spec: DatasetSpec, cfg: PreprocessConfig, res: SplitResult, out: str
) -> list[ShardJob]:
    """The split's samples (training: one per identity group, test: one per pair), cut every
    ``cfg.shard_size`` samples, in the order the single-process writer has always used."""
    if res.split == "train":
        samples = train_groups(res.images, res.pairs)
    else:
        samples = test_samples(res.images, res.pairs)
    jobs = []
    seen: set[str] = set()
    for index, start in enumerate(range(0, len(samples), cfg.shard_size)):
        chunk = samples[start : start + cfg.shard_size]
        names = {n for sample_names, _ in chunk for n in sample_names}
        first_seen = frozenset(names - seen) if res.split == "test" else frozenset()
        seen |= names
        # Absolute paths: a Ray worker's working folder is not the driver's.
        records = {n: replace(res.images[n], path=Path(res.images[n].path).resolve()) for n in sorted(names)}
        jobs.append(
            ShardJob(
                dataset,
                spec,
                cfg,
                res.split,
                index,
                start,
                tuple((tuple(n), tuple(p)) for n, p in chunk),
                records,
                res.files.pairs_csv.name,
                out,
                str(Path(spec.root).resolve()),
                first_seen,
            )
        )
    return jobs


def write_shard(job: ShardJob) -> ShardResult:
    """Check, encode and write one planned shard (see the module doc)."""
    scheme = scheme_for(job.spec.task)
    cfg, size = job.cfg, job.spec.image_size
    encoded: dict[str, tuple[list[tuple[str, bytes]], bool]] = {}
    bad: dict[str, str] = {}
    pair_rejects: list[Reject] = []
    no_face: set[str] = set()
    with_truth = with_edits = 0
    edit_files: dict[str, bytes] = {}  # popped when written: once per view

    def encode(name: str) -> None:
        if name in encoded or name in bad:
            return
        record = job.records[name]
        reason, raw, rgb = load_image(record.path, job.spec.source_size, job.dataset)
        if reason is not None:
            bad[name] = reason
            return
        assert raw is not None and rgb is not None
        encoded[name] = encode_view(
            record, size, cfg.heatmap_sigma, cfg.face_size, cfg.jpeg_quality, scheme, decoded=(raw, rgb)
        )
        if job.split == "test":
            truth = _groundtruth_file(job, name)
            if truth is not None:
                encoded[name][0].append(("gt.npz", truth))
            if name in job.edit_views:
                edits = _true_edits_file(job, name)
                if edits is not None:
                    edit_files[name] = edits

    with ShardWriter(job.out, job.split, cfg.shard_size, start_index=job.index) as writer:
        for offset, (names, pairs) in enumerate(job.samples):
            for name in names:
                encode(name)
            keep = [n for n in names if n in encoded]
            kept: list[PairRow] = []
            for p in pairs:
                failed = next(
                    ((role, n) for role, n in (("source", p.source), ("target", p.target)) if n in bad), None
                )
                if failed is None:
                    kept.append(p)
                    continue
                role, n = failed
                pair_rejects.append(
                    Reject(
                        job.split,
                        "pair",
                        f"{p.source},{p.target}",
                        f"{role} image {n} was rejected ({bad[n]}) ({job.pairs_csv} line {p.line})",
                    )
                )
            if not keep:
                continue  # every image of the sample failed its check
            members = [("meta.json", meta_json(job.split, keep, kept, job.records, size))]
            for v, name in enumerate(keep):
                files, has_face = encoded[name]
                if not has_face:
                    no_face.add(name)
                members.extend((f"v{v}.{ext}", data) for ext, data in files)
                with_truth += any(ext == "gt.npz" for ext, _ in files)
                edits = edit_files.pop(name, None)
                if edits is not None:
                    members.append((f"v{v}.edits.npz", edits))
                    with_edits += 1
            writer.write(f"{job.first_key + offset:06d}", members, images=len(keep), pairs=len(kept))
        shards = writer.close()
    return ShardResult(
        shards[0] if shards else None,
        bad,
        tuple(pair_rejects),
        tuple(sorted(no_face)),
        len(encoded) + len(bad),
        with_truth,
        with_edits,
    )


def _groundtruth_file(job: ShardJob, name: str) -> bytes | None:
    """The renderer's ground truth of test image ``name`` when the dataset has it at the stored
    size (a resized image's would no longer match its pixels); None otherwise."""
    path = groundtruth.path_for(job.root, job.split, name)
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        shape = groundtruth.decode(data).shape
    except ValueError:
        return None
    return data if shape == tuple(job.spec.image_size) else None


def _true_edits_file(job: ShardJob, name: str) -> bytes | None:
    """The renderer's true edits of test image ``name`` when the dataset has them at the stored size."""
    path = portrait_true_edits.path_for(job.root, job.split, name)
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        shape = portrait_true_edits.decode(data).images.shape[1:3]
    except ValueError:
        return None
    return data if shape == tuple(job.spec.image_size) else None
