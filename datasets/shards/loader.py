"""Distributed pair loader over the preprocess stage's shards.

    loader = train_loader("data/shards/synthetic_fashion", rank=r, world_size=w, batch_size=4,
                          num_workers=2, seed=0, augment=AugmentConfig())
    for epoch in range(n):
        loader.set_epoch(epoch)
        for batch in loader: ...          # len(loader) batches on every rank
    loader.skipped                         # bad samples/shards skipped so far

Batch keys (the model relies on exactly these): ``source_image``, ``target_image``
float32 [B,3,H,W] in [-1,1]; ``source_pose``, ``target_pose`` float32 [B,K,H,W] in
[0,1]; ``target_face`` float32 [B,3,f,f] in [-1,1]; ``target_face_box`` float32
[B,4] (x0,y0,x1,y1) pixels; ``target_face_valid`` bool [B]; ``source_keypoints``,
``target_keypoints`` float32 [B,K,2]; ``source_name``, ``target_name`` lists.
:func:`eval_loader` (test split, CSV order) batches add ``pair_index`` and ``pair_line`` (int64 [B]).

How an epoch is split (:func:`plan_epoch`, a pure function of the manifest):
the training pairs form one global sequence — shards in a per-epoch shuffled
order, each shard's pairs in a per-epoch shuffled order.  Rank r takes positions
``[r·n, (r+1)·n)`` with ``n = ceil(P / world_size)`` (wrapping to the start, so
``world_size·n − P < world_size`` pairs are seen twice; ``pad=False`` uses
``floor`` and leaves that many out instead).  Every rank thus has exactly
``ceil(n / batch_size)`` batches, and each of its loader workers takes a
contiguous run of those batches.  A shard on a boundary is read by both
neighbours, each using only its own positions, so no pair is read twice or
skipped (beyond the padding above) whatever the shard count.

Bad data never kills a worker: an unreadable shard or sample is logged with
shard and key, counted, and its pairs are replaced by the worker's last good
pair (so batch counts stay equal and DDP cannot hang).  More than
``max_consecutive_errors`` bad samples in a row raise :class:`DataLoaderError`.
Decoding happens in the workers; pose maps travel as sparse patches and are
pasted into the zeroed float batch in the consuming process (:func:`finalise`).
``compact=True`` yields the workers' batches untouched (uint8 NHWC images, sparse
poses) for a consumer that expands them itself on its device
(:mod:`datasets.shards.expand`, what training does): the dense float32 pose maps
(1.6 MB per pair at 128×88) are most of the loader's cost at small image sizes
(see ``python -m pipelines.bench data``).  With ``poses="keypoints"`` (Gaussian
body heatmaps only, compact only) the workers send no pose maps at all: neither
the stored ones are decoded nor augmented ones rendered; the consumer renders
them from the (augmented) keypoints.  ``face_crops=False`` skips decoding or
cutting the face crop (``target_face``), which the training step does not use.
The float conversion here is one compiled single-threaded pass: see :func:`cpu_float_image`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datasets import storage
from datasets.pose import heatmaps
from datasets.pose.face import crop_face
from datasets.pose.scheme import pose_channels_of_manifest, scheme_of_manifest
from datasets.shards.augment import AugmentConfig, Augmenter, compile_kernels
from datasets.shards.ring import Layout, SlotRing, make_ring
from datasets.shards.samples import Sample, SampleError, decode_image, parse_sample
from datasets.shards.tar import ShardFormatError, iter_samples, load_manifest, manifest_location, read_shard
from datasets.storage import ChecksumError

log = logging.getLogger("attnflow.data")
DATA_ERRORS = (SampleError, ShardFormatError, ValueError, OSError, KeyError, IndexError, cv2.error)
BATCH_KEYS = (
    "source_image",
    "target_image",
    "source_pose",
    "target_pose",
    "target_face",
    "target_face_box",
    "target_face_valid",
    "source_keypoints",
    "target_keypoints",
    "source_name",
    "target_name",
)


class DataLoaderError(RuntimeError):
    """Too many consecutive bad samples, or no readable sample at all."""


@dataclass(frozen=True)
class Segment:
    """Positions ``[lo, hi)`` of shard ``shard``'s (per-epoch ordered) pair sequence."""

    shard: int
    lo: int
    hi: int


@dataclass(frozen=True)
class RankPlan:
    num_batches: int
    num_pairs: int  # pairs this rank yields per epoch
    workers: tuple[tuple[Segment, ...], ...]  # per loader worker
    worker_pairs: tuple[int, ...]


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_shards)
    return np.random.default_rng([seed, epoch, 1]).permutation(num_shards)


def slot_order(num_slots: int, seed: int, epoch: int, shard: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_slots)
    return np.random.default_rng([seed, epoch, 2, shard]).permutation(num_slots)


def _segments(order: np.ndarray, shard_pairs: list[int], start: int, stop: int) -> list[Segment]:
    """Global positions [start, stop) (may exceed the total: wraps) -> per-shard segments."""
    total = sum(shard_pairs)
    out: list[Segment] = []
    while start < stop:
        base = (start // total) * total
        lo, hi = start - base, min(stop - base, total)
        offset = 0
        for s in order:
            n = shard_pairs[s]
            a, b = max(lo, offset), min(hi, offset + n)
            if a < b:
                out.append(Segment(int(s), a - offset, b - offset))
            offset += n
        start = base + hi
    return out


def _worker_segments(
    order: np.ndarray,
    shard_pairs: list[int],
    start: int,
    n: int,
    batch_size: int,
    num_workers: int,
    interleave: bool,
) -> tuple[tuple[tuple[Segment, ...], ...], tuple[int, ...]]:
    """Split the rank's positions [start, start+n) into per-worker segment lists.

    Contiguous runs of batches per worker (``interleave=False``) keep a worker on
    few shards; batch ``j`` -> worker ``j % num_workers`` (``interleave=True``)
    makes the DataLoader's round-robin hand batches out in position order.
    """
    num_batches = math.ceil(n / batch_size)
    nw = max(num_workers, 1)
    workers, counts = [], []
    for k in range(nw):
        if interleave:
            batches = range(k, num_batches, nw)
        else:
            batches = range(k * num_batches // nw, (k + 1) * num_batches // nw)
        segs: list[Segment] = []
        count = 0
        for j in batches:
            lo, hi = start + j * batch_size, start + min((j + 1) * batch_size, n)
            segs.extend(_segments(order, shard_pairs, lo, hi))
            count += hi - lo
        workers.append(tuple(_merge(segs)))
        counts.append(count)
    return tuple(workers), tuple(counts)


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segs:
        if out and out[-1].shard == seg.shard and out[-1].hi == seg.lo:
            out[-1] = Segment(seg.shard, out[-1].lo, seg.hi)
        else:
            out.append(seg)
    return out


def plan_epoch(
    shard_pairs: list[int],
    rank: int,
    world_size: int,
    batch_size: int,
    num_workers: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    pad: bool = True,
) -> RankPlan:
    """Which shard positions each loader worker of ``rank`` reads this epoch (see module doc)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size={world_size})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = sum(shard_pairs)
    if total == 0:
        raise DataLoaderError("the shards hold no pairs")
    n = math.ceil(total / world_size) if pad else total // world_size
    if n == 0:
        raise DataLoaderError(f"{total} pairs cannot feed {world_size} ranks with pad=False")
    order = shard_order(len(shard_pairs), seed, epoch, shuffle)
    workers, counts = _worker_segments(
        order, shard_pairs, rank * n, n, batch_size, num_workers, interleave=not shuffle
    )
    return RankPlan(math.ceil(n / batch_size), n, workers, counts)


def plan_contiguous(
    shard_pairs: list[int],
    rank: int,
    world_size: int,
    batch_size: int,
    num_workers: int,
    align_batches: bool = False,
) -> RankPlan:
    """Unshuffled, unpadded: rank r takes positions [r·P/W, (r+1)·P/W), batches in order.

    With ``align_batches`` the split falls on the single-rank run's batch boundaries instead, so
    every batch holds the same pairs whatever ``world_size`` is (results that depend on a batch's
    composition, even in the last float bit, then do not depend on the rank count).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size={world_size})")
    total = sum(shard_pairs)
    if total == 0:
        raise DataLoaderError("the shards hold no pairs")
    if align_batches:
        nb = math.ceil(total / batch_size)
        lo = min(rank * nb // world_size * batch_size, total)
        hi = min((rank + 1) * nb // world_size * batch_size, total)
    else:
        lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    workers, counts = _worker_segments(
        np.arange(len(shard_pairs)), shard_pairs, lo, hi - lo, batch_size, num_workers, interleave=True
    )
    return RankPlan(math.ceil((hi - lo) / batch_size), hi - lo, workers, counts)


T = TypeVar("T")


def _every(values: list[T | None], what: str) -> list[T]:
    """``values``, each of them there (a field the loader's settings fill in for every pair)."""
    present = [v for v in values if v is not None]
    if len(present) != len(values):
        raise ValueError(f"a pair without its {what} in a batch that needs one for every pair")
    return present


@dataclass
class _Pair:
    """One pair ready for collation (uint8 images, sparse poses)."""

    src_rgb: np.ndarray
    tgt_rgb: np.ndarray
    src_kp: np.ndarray
    tgt_kp: np.ndarray
    src_pose: heatmaps.SparseHeatmaps | None  # None: poses="keypoints"
    tgt_pose: heatmaps.SparseHeatmaps | None
    face: np.ndarray | None  # None: face_crops=False
    face_box: np.ndarray
    face_valid: bool
    src_name: str
    tgt_name: str
    pair_index: int
    pair_line: int


@dataclass
class _ParsedShard:
    samples: list[Sample]
    slots: list[tuple[int, int] | None]
    errors: list[tuple[str, BaseException]]  # (where, error) met while reading it
    nbytes: int  # the shard's bytes, which its samples' views point into


class _PairStream(IterableDataset):
    """Runs inside each loader worker: reads its segments and yields compact batches."""

    def __init__(
        self,
        root: Path | str,
        shards: list[dict],
        planner: Callable[..., RankPlan],
        epoch: torch.Tensor,
        batch_size: int,
        seed: int,
        rank: int,
        shuffle: bool,
        augment: AugmentConfig | None,
        manifest: dict,
        max_consecutive_errors: int,
        poses: str = "sparse",
        face_crops: bool = True,
        ring: SlotRing | None = None,
        shard_cache_bytes: int = 0,
        endless: bool = False,
    ) -> None:
        # Loader workers put the images in shared memory (datasets/shards/ring.py); endless ones run
        # on from epoch to epoch (see __iter__).
        self.ring, self.endless = ring, endless
        # The epoch lives in shared memory and the plan is recomputed from it at every pass, so
        # persistent loader workers (started once per run, not once per epoch) follow set_epoch.
        self.root, self.shards, self.planner, self.epoch_cell = root, shards, planner, epoch
        self.batch_size, self.seed, self.rank, self.shuffle = batch_size, seed, rank, shuffle
        self.augment = augment
        self.size = tuple(manifest["image_size"])
        self.sigma = float(manifest["preprocess"]["heatmap_sigma"])
        self.face_size = int(manifest["preprocess"]["face_size"])
        # Body heatmaps or portrait part maps, as the shards were written (the manifest's task).
        self.scheme = scheme_of_manifest(manifest)
        self.max_errors = max_consecutive_errors
        self.sparse_poses, self.face_crops = poses == "sparse", face_crops
        # Pair index of each shard's first pair (for test batches' pair_index).
        self.first_pair = np.concatenate([[0], np.cumsum([s["pairs"] for s in shards])]).tolist()
        # Parsed shards kept from pass to pass (each worker its own, least recently used out first):
        # a persistent worker then reads, checks and parses a shard once, not once per epoch. The
        # JPEGs are still decoded at every visit.
        self.shard_cache_bytes = shard_cache_bytes
        self._parsed: OrderedDict[int, _ParsedShard] = OrderedDict()

    def __iter__(self) -> Iterator[Any]:
        """Batches in-process; in a loader worker, lists of ``ring.chunk`` batches (one pipe message).

        An ``endless`` worker goes on from one epoch into the next (its batches carry their
        epoch), so the consumer finds the next epoch's first batches ready instead of waiting,
        at every epoch boundary, for the workers to fill the pipeline again (a quarter of an
        epoch of the default dataset's 576 pairs, measured).
        """
        info = get_worker_info()
        self.wid = info.id if info is not None else None
        epoch = int(self.epoch_cell[0])
        if self.wid is None or not self.endless:
            yield from self._messages(self._batches(epoch))
            return
        while True:
            yield from self._messages(self._batches(epoch))
            epoch += 1

    def _messages(self, batches: Iterator[dict[str, Any]]) -> Iterator[Any]:
        if self.wid is None or self.ring is None or self.ring.chunk == 1:
            yield from batches
            return
        chunk: list[dict[str, Any]] = []
        for batch in batches:
            chunk.append(batch)
            if len(chunk) == self.ring.chunk:
                yield chunk
                chunk = []
        if chunk:  # a message never spans two epochs
            yield chunk

    def _batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        self.epoch = epoch
        plan = self.planner(epoch=self.epoch)
        segments = plan.workers[wid] if info is not None else tuple(s for w in plan.workers for s in w)
        aug = None
        if self.augment is not None:
            aug = Augmenter(
                self.augment,
                self.scheme.flip_permutation(),
                seed=int(np.random.default_rng([self.seed, self.epoch, self.rank, wid]).integers(2**31)),
            )
        state: dict[str, Any] = {
            "skipped": 0,
            "substituted": 0,
            "errors": [],
            "consecutive": 0,
            "deficit": 0,
            "last": None,
        }
        buf: list[_Pair] = []
        for seg in segments:
            for pair in self._segment_pairs(seg, aug, state, wid):
                buf.append(pair)
                if len(buf) == self.batch_size:
                    yield self._collate(buf, state)
                    buf = []
        if state["deficit"]:
            raise DataLoaderError(
                f"rank {self.rank} worker {wid}: no readable sample in "
                f"{len(segments)} shard segment(s); last errors: {state['errors'][-3:]}"
            )
        if buf:
            yield self._collate(buf, state)

    def _error(self, state: dict, where: str, exc: BaseException) -> None:
        msg = f"{where}: {type(exc).__name__}: {exc}"
        log.warning("skipping bad data: %s", msg)
        state["skipped"] += 1
        state["consecutive"] += 1
        state["errors"].append(msg)
        if state["consecutive"] > self.max_errors:
            raise DataLoaderError(
                f"{state['consecutive']} consecutive bad samples (> max_consecutive_errors="
                f"{self.max_errors}); last: {msg}"
            )

    def _segment_pairs(self, seg: Segment, aug: Augmenter | None, state: dict, wid: int) -> Iterator[_Pair]:
        shard = self.shards[seg.shard]
        if state.get("shard") == seg.shard:  # consecutive segments of one shard: parse it once
            samples, slots, cache, bad_keys = state["parsed"]
        else:
            samples, slots = self._parsed_shard(seg.shard, state)
            cache, bad_keys = {}, set()
            state["shard"], state["parsed"] = seg.shard, (samples, slots, cache, bad_keys)
        order = slot_order(len(slots), self.seed, self.epoch, seg.shard, self.shuffle)
        for pos in order[seg.lo : seg.hi].tolist():
            slot = slots[pos]
            pair = None
            if slot is not None and slot[0] not in bad_keys:
                si, pj = slot
                sample = samples[si]
                assert sample is not None
                try:
                    pair = self._make_pair(
                        sample,
                        pj,
                        cache,
                        si,
                        aug,
                        self.first_pair[seg.shard] + pos if not self.shuffle else -1,
                    )
                except DATA_ERRORS as exc:
                    bad_keys.add(si)
                    self._error(state, f"{shard['name']} key {sample.key}", exc)
            if pair is None:
                if state["last"] is None:
                    state["deficit"] += 1
                else:
                    state["substituted"] += 1
                    yield state["last"]
                continue
            state["consecutive"] = 0
            state["last"] = pair
            for _ in range(state["deficit"] + 1):
                yield pair
            state["substituted"] += state["deficit"]
            state["deficit"] = 0

    def _parsed_shard(self, index: int, state: dict) -> tuple[list[Sample], list[tuple[int, int] | None]]:
        """A shard's samples and slots, from the cache or read now; its read errors are counted
        (and logged) at every visit, cached or not, so the counts do not depend on the cache."""
        parsed = self._parsed.get(index)
        if parsed is None:
            parsed = self._read_shard(self.shards[index])
            if 0 < parsed.nbytes <= self.shard_cache_bytes:
                self._parsed[index] = parsed
                while sum(p.nbytes for p in self._parsed.values()) > self.shard_cache_bytes:
                    self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(index)
        for where, exc in parsed.errors:
            self._error(state, where, exc)
        return parsed.samples, parsed.slots

    def _read_shard(self, shard: dict) -> _ParsedShard:
        """Parse a shard's samples; slots = (sample, pair) per manifest pair, None where unreadable."""
        samples: list[Sample] = []
        slots: list[tuple[int, int] | None] = []
        errors: list[tuple[str, BaseException]] = []
        try:
            data = read_shard(self.root, shard)
        except (ChecksumError, FileNotFoundError) as exc:  # a missing, cut or altered shard: bad data
            errors.append((f"{shard['name']}", exc))
            data = b""
        # Any other StorageError (endpoint unreachable after the library's retries, refused
        # credentials) propagates: substituting pairs for a whole outage would train on repeats.
        try:
            for key, files in iter_samples(data) if data else ():
                try:
                    sample = parse_sample(key, files)
                except DATA_ERRORS as exc:
                    errors.append((f"{shard['name']} key {key}", exc))
                    continue
                samples.append(sample)
                slots.extend((len(samples) - 1, j) for j in range(len(sample.pairs)))
        except DATA_ERRORS as exc:
            errors.append((f"{shard['name']}", exc))
        expected = int(shard["pairs"])
        if len(slots) > expected:
            log.warning(
                "%s holds %d pairs, manifest says %d: using the first %d",
                shard["name"],
                len(slots),
                expected,
                expected,
            )
        return _ParsedShard(samples, slots[:expected] + [None] * (expected - len(slots)), errors, len(data))

    def _view(self, sample: Sample, v: int, cache: dict, si: int) -> np.ndarray:
        """Decoded RGB of a view, decoded once per shard visit however many pairs use it.

        All views of a sample are decoded at its first use, so a sample with one
        bad view is skipped as a whole, whichever of its pairs comes first.
        """
        if (si, v) not in cache:
            for i, view in enumerate(sample.views):
                cache[(si, i)] = decode_image(view.jpeg, f"key {sample.key} view {i} image", self.size)
        return cache[(si, v)]

    def _make_pair(
        self, sample: Sample, j: int, cache: dict, si: int, aug: Augmenter | None, pair_index: int
    ) -> _Pair:
        a, b = sample.pairs[j]
        src, tgt = sample.views[a], sample.views[b]
        src_rgb = self._view(sample, a, cache, si)
        tgt_rgb = self._view(sample, b, cache, si)
        src_pose = tgt_pose = face = None
        if aug is not None:
            same, identical = aug.same_view()
            if same:
                tgt, tgt_rgb = src, src_rgb
            s = aug(src_rgb, src.keypoints, src.face_box, src.face_valid)
            t = s if identical else aug(tgt_rgb, tgt.keypoints, tgt.face_box, tgt.face_valid)
            if self.sparse_poses:  # rendered from the moved keypoints, never warped
                src_pose = self.scheme.render(s.keypoints, self.size, self.sigma)
                tgt_pose = self.scheme.render(t.keypoints, self.size, self.sigma)
            if self.face_crops:
                face = crop_face(t.rgb, tuple(t.face_box), self.face_size, t.face_valid)
            return _Pair(
                s.rgb,
                t.rgb,
                s.keypoints,
                t.keypoints,
                src_pose,
                tgt_pose,
                face,
                t.face_box,
                t.face_valid,
                src.name,
                tgt.name,
                pair_index,
                self._line(sample, j),
            )
        if self.sparse_poses:
            src_pose = heatmaps.decode(bytes(src.pose))
            tgt_pose = heatmaps.decode(bytes(tgt.pose))
        if self.face_crops:
            face = decode_image(
                tgt.face_jpeg, f"key {sample.key} view {b} face", (self.face_size, self.face_size)
            )
        return _Pair(
            src_rgb,
            tgt_rgb,
            src.keypoints,
            tgt.keypoints,
            src_pose,
            tgt_pose,
            face,
            tgt.face_box,
            tgt.face_valid,
            src.name,
            tgt.name,
            pair_index,
            self._line(sample, j),
        )

    @staticmethod
    def _line(sample: Sample, j: int) -> int:
        return int(sample.pair_lines[j]) if j < len(sample.pair_lines) else -1

    def _collate(self, pairs: list[_Pair], state: dict) -> dict[str, Any]:
        # In a worker the images go into its shared-memory slot and only the small fields are
        # pickled through the pipe (datasets/shards/ring.py); in-process they stay as they are.
        images = {"source_rgb": [p.src_rgb for p in pairs], "target_rgb": [p.tgt_rgb for p in pairs]}
        if self.face_crops:
            images["face_rgb"] = _every([p.face for p in pairs], "face crop")
        # Images stay HWC: whoever turns them into float CHW transposes in the same pass
        # (cpu_float_image), which costs less than a uint8 transpose here and a convert there.
        if self.ring is not None and self.wid is not None:  # in a worker: stacked into shared memory
            batch: dict[str, Any] = {"_slot": self.ring.put(self.wid, images)}
        else:
            batch = {name: np.stack(stack) for name, stack in images.items()}
        batch.update(
            {
                "source_keypoints": np.stack([p.src_kp for p in pairs]).astype(np.float32),
                "target_keypoints": np.stack([p.tgt_kp for p in pairs]).astype(np.float32),
                "target_face_box": np.stack([p.face_box for p in pairs]).astype(np.float32),
                "target_face_valid": np.array([p.face_valid for p in pairs], dtype=bool),
                "source_name": [p.src_name for p in pairs],
                "target_name": [p.tgt_name for p in pairs],
                "pair_index": np.array([p.pair_index for p in pairs], dtype=np.int64),
                "pair_line": np.array([p.pair_line for p in pairs], dtype=np.int64),
                "_skipped": state["skipped"],
                "_substituted": state["substituted"],
                "_errors": state["errors"],
                "_epoch": self.epoch,
            }
        )
        if self.sparse_poses:
            batch["source_pose_sparse"] = heatmaps.pack(_every([p.src_pose for p in pairs], "source pose"))
            batch["target_pose_sparse"] = heatmaps.pack(_every([p.tgt_pose for p in pairs], "target pose"))
        state["skipped"] = state["substituted"] = 0
        state["errors"] = []
        return batch


def _keep(item: Any) -> Any:
    """DataLoader collate_fn: pass worker batches through untouched (no tensor conversion)."""
    return item


def cpu_float_image(nhwc: np.ndarray) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float32 [B,3,H,W] in [-1, 1], contiguous: ``float32(v) · float32(2/255) − 1``.

    Single-threaded on purpose (torch's intra-op threads made these small conversions
    10-20x slower on a loaded 2-core machine, measured): one compiled pass that transposes
    as it converts (:mod:`datasets.shards.cpu_images`).
    """
    from datasets.shards.cpu_images import float_planes

    return torch.from_numpy(float_planes(np.ascontiguousarray(nhwc)))


def finalise(compact: dict[str, Any], pose_channels: int, test: bool = False) -> dict[str, Any]:
    """Compact worker batch -> the model's float batch (images scaled, poses pasted)."""
    b, h, w, _ = compact["source_rgb"].shape
    poses = {}
    for role in ("source", "target"):
        out = np.zeros((b, pose_channels, h, w), np.float32)
        heatmaps.paste_into(out, heatmaps.unpack(compact[f"{role}_pose_sparse"]))
        poses[role] = torch.from_numpy(out)
    batch = {
        "source_image": cpu_float_image(compact["source_rgb"]),
        "target_image": cpu_float_image(compact["target_rgb"]),
        "source_pose": poses["source"],
        "target_pose": poses["target"],
        "target_face_box": torch.from_numpy(compact["target_face_box"]),
        "target_face_valid": torch.from_numpy(compact["target_face_valid"]),
        "source_keypoints": torch.from_numpy(compact["source_keypoints"]),
        "target_keypoints": torch.from_numpy(compact["target_keypoints"]),
        "source_name": list(compact["source_name"]),
        "target_name": list(compact["target_name"]),
    }
    if "face_rgb" in compact:
        batch["target_face"] = cpu_float_image(compact["face_rgb"])
    if test:
        batch["pair_index"] = torch.from_numpy(compact["pair_index"])
        batch["pair_line"] = torch.from_numpy(compact["pair_line"])
    return batch


class PairLoader:
    """Iterable of batches for one rank; ``set_epoch`` before each epoch (see module doc)."""

    def __init__(
        self,
        shards_dir: str | Path,
        *,
        split: str,
        rank: int,
        world_size: int,
        batch_size: int,
        num_workers: int = 2,
        seed: int = 0,
        shuffle: bool = True,
        pad: bool = True,
        augment: AugmentConfig | None = None,
        max_consecutive_errors: int = 10,
        prefetch_factor: int = 4,
        multiprocessing_context: str | None = None,
        compact: bool = False,
        poses: Literal["sparse", "keypoints"] = "sparse",
        face_crops: bool = True,
        shard_cache_mb: float = 64,
    ) -> None:
        # A folder or a URL prefix (s3://…; Path would fold its "//").
        self.root: Path | str = shards_dir if storage.is_url(shards_dir) else Path(shards_dir)
        self.compact = compact  # True: yield worker batches as is (uint8 NHWC images, sparse poses)
        self.manifest = load_manifest(self.root)
        self.split = split
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not self.shards:
            raise DataLoaderError(f"{storage.safe_url(manifest_location(self.root))} lists no {split} shards")
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.num_workers, self.seed, self.shuffle, self.pad = num_workers, seed, shuffle, pad
        self.augment, self.max_consecutive_errors = augment, max_consecutive_errors
        self.prefetch_factor, self.mp_context = prefetch_factor, multiprocessing_context
        self.num_keypoints = int(self.manifest["num_keypoints"])
        self.pose_channels = pose_channels_of_manifest(self.manifest)  # 18 joints, or 8 portrait parts
        if poses == "keypoints" and not (compact and scheme_of_manifest(self.manifest).task == "pose"):
            raise ValueError(
                "poses='keypoints' needs compact=True and Gaussian body heatmaps "
                f"(these shards: task {scheme_of_manifest(self.manifest).task!r})"
            )
        self.poses, self.face_crops = poses, face_crops
        if shard_cache_mb < 0:
            raise ValueError(f"shard_cache_mb must be >= 0, got {shard_cache_mb}")
        self.shard_cache_bytes = int(shard_cache_mb * 2**20)  # per loader worker (or in-process)
        self.epoch = 0
        self.epoch_cell = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.skipped = 0  # bad samples or shards skipped (cumulative)
        self.substituted = 0  # pairs replaced by a repeat because their sample was bad (cumulative)
        self.recent_errors: list[str] = []
        self.planner = self._planner()
        self.plan = self.planner(epoch=0)
        self._workers: DataLoader | None = None
        self._ring: SlotRing | None = None
        self._local: _PairStream | None = None
        self._feed: Iterator[Any] | None = None  # the endless workers' stream, and its next epoch
        self._feed_epoch: int | None = None
        self._ahead: list[dict[str, Any]] = []

    def _planner(self) -> Callable[..., RankPlan]:
        """The plan as a function of the epoch only (picklable: it travels to the loader workers)."""
        return partial(
            plan_epoch,
            [int(s["pairs"]) for s in self.shards],
            self.rank,
            self.world_size,
            self.batch_size,
            self.num_workers,
            seed=self.seed,
            shuffle=self.shuffle,
            pad=self.pad,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_cell[0] = epoch
        self.plan = self.planner(epoch=epoch)

    def __len__(self) -> int:
        return self.plan.num_batches

    @property
    def pairs_per_epoch(self) -> int:
        return self.plan.num_pairs

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.num_workers > 0:
            # Workers persist across epochs: started at the first pass, told the epoch through
            # epoch_cell (start-up of 2 workers measured ~4x the pass over 576 pairs in bench data).
            if self._workers is None:
                if self.augment is not None:
                    compile_kernels()  # before the workers fork, so that they inherit it
                self._ring = make_ring(
                    self._ring_layout(), self.num_workers, self.prefetch_factor + 1, chunked=self.shuffle
                )
                self._workers = DataLoader(
                    self._stream(self._ring),
                    batch_size=None,
                    collate_fn=_keep,
                    num_workers=self.num_workers,
                    prefetch_factor=self.prefetch_factor,
                    multiprocessing_context=self.mp_context,
                    persistent_workers=True,
                )
            source: Iterable[Any] = self._workers
        else:
            if self._local is None:  # kept across epochs, like a persistent worker (its shard cache)
                self._local = self._stream()
            source = self._local
        test = self.split == "test"
        if source is self._workers and self.shuffle:
            yield from self._endless_epoch(test)
            return
        for item in source:
            yield from self._finish(self._received(item), test)

    def _received(self, item: Any) -> list[dict[str, Any]]:
        """A worker message as its batches, images copied out of their shared-memory slots."""
        chunk = item if isinstance(item, list) else [item]
        for compact in chunk:  # every slot of a message is read before the next is asked for
            if "_slot" in compact:
                assert self._ring is not None  # slots come from the workers, which write to the ring
                compact.update(self._ring.take(compact.pop("_slot")))
        return chunk

    def _endless_epoch(self, test: bool) -> Iterator[dict[str, Any]]:
        """This epoch's batches from workers that run on into the next epochs (see _PairStream).

        The workers' stream is (re)started at ``self.epoch`` unless it is already there (the
        previous pass ran to its end and this is the epoch after it). Batches of a later epoch
        that arrive first (a worker done with its part) wait in ``_ahead``, in arrival order;
        within an epoch the order is the round-robin over workers of a per-epoch pass.
        """
        if self._feed is None or self._feed_epoch != self.epoch:
            assert self._workers is not None  # only a pass from the workers gets here
            self._feed = iter(self._workers)  # persistent workers: restarts them at epoch_cell (set_epoch)
            self._ahead = []
        want, remaining, finished = self.epoch, len(self), False
        try:
            while remaining:
                mine = [b for b in self._ahead if b["_epoch"] == want]
                if mine:
                    self._ahead = [b for b in self._ahead if b["_epoch"] != want]
                else:
                    chunk = self._received(next(self._feed))
                    mine = [b for b in chunk if b["_epoch"] == want]
                    self._ahead += [b for b in chunk if b["_epoch"] != want]
                remaining -= len(mine)
                yield from self._finish(mine, test)
            finished = True
        finally:
            self._feed_epoch = want + 1 if finished else None  # a pass left midway restarts the stream

    def _finish(self, chunk: list[dict[str, Any]], test: bool) -> Iterator[dict[str, Any]]:
        for compact in chunk:
            self.skipped += int(compact.pop("_skipped"))
            self.substituted += int(compact.pop("_substituted"))
            self.recent_errors = (self.recent_errors + list(compact.pop("_errors")))[-20:]
            compact.pop("_epoch", None)
            yield compact if self.compact else finalise(compact, self.pose_channels, test)

    def _stream(self, ring: SlotRing | None = None) -> _PairStream:
        return _PairStream(
            self.root,
            self.shards,
            self.planner,
            self.epoch_cell,
            self.batch_size,
            self.seed,
            self.rank,
            self.shuffle,
            self.augment,
            self.manifest,
            self.max_consecutive_errors,
            self.poses,
            self.face_crops,
            ring,
            self.shard_cache_bytes,
            endless=self.shuffle,
        )

    def _ring_layout(self) -> Layout:
        h, w = (int(v) for v in self.manifest["image_size"])
        fields = [("source_rgb", (h, w, 3)), ("target_rgb", (h, w, 3))]
        if self.face_crops:
            f = int(self.manifest["preprocess"]["face_size"])
            fields.append(("face_rgb", (f, f, 3)))
        return Layout(tuple(fields), self.batch_size)


def train_loader(
    shards_dir: str | Path,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    num_workers: int = 2,
    seed: int = 0,
    augment: AugmentConfig | None = AugmentConfig(),
    pad: bool = True,
    max_consecutive_errors: int = 10,
    **kw: Any,
) -> PairLoader:
    """Shuffled training pairs for one rank; every rank gets ``len(loader)`` batches per epoch."""
    return PairLoader(
        shards_dir,
        split="train",
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        shuffle=True,
        pad=pad,
        augment=augment,
        max_consecutive_errors=max_consecutive_errors,
        **kw,
    )


def eval_loader(
    shards_dir: str | Path,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    equal_batches: bool = False,
    align_batches: bool = False,
    **kw: Any,
) -> PairLoader:
    """Test pairs in pairs-CSV order, no augmentation; rank r gets the r-th contiguous chunk.

    With ``equal_batches=False`` (default) no pair is repeated and the last rank
    may get fewer pairs (and batches); set it when every rank must run the same
    number of collective steps.  ``align_batches`` splits on batch boundaries
    (see :func:`plan_contiguous`).
    """
    return (
        PairLoader(
            shards_dir,
            split="test",
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=False,
            pad=True,
            augment=None,
            **kw,
        )
        if equal_batches
        else _ContiguousTestLoader(shards_dir, batch_size, rank, world_size, num_workers, align_batches, **kw)
    )


class _ContiguousTestLoader(PairLoader):
    """Test split without padding (see :func:`plan_contiguous`)."""

    def __init__(
        self,
        shards_dir: str | Path,
        batch_size: int,
        rank: int,
        world_size: int,
        num_workers: int,
        align_batches: bool = False,
        **kw: Any,
    ) -> None:
        self.align_batches = align_batches
        super().__init__(
            shards_dir,
            split="test",
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=False,
            pad=True,
            augment=None,
            **kw,
        )

    def _planner(self) -> Callable[..., RankPlan]:
        return partial(
            _fixed,
            plan_contiguous(
                [int(s["pairs"]) for s in self.shards],
                self.rank,
                self.world_size,
                self.batch_size,
                self.num_workers,
                self.align_batches,
            ),
        )


def _fixed(plan: RankPlan, epoch: int) -> RankPlan:
    return plan
