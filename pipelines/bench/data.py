"""``python -m pipelines.bench data``: the shard loader against loose JPEG files, same images.

Measures, in one process, on the training pairs of one dataset:

* ``loose cv2``: a plain loop over the pairs CSV that ``cv2.imread``s source
  and target from the raw folder (what a naive loose-file dataset does, with no
  pose maps, augmentation or collation);
* the loader (``datasets.shards.loader.train_loader``): decode + pose maps + augment +
  collate into the model's float batch, in-process and with 1 and 2 loader
  workers, with and without augmentation; and the same up to the compact batch
  (``compact=True``: uint8 images, sparse poses), i.e. without the expansion
  into dense float32 pose maps that dominates at small image sizes;
* the training input path: exactly what ``pipelines.training.loop.make_batches``
  feeds the step — compact batches (uint8 images, keypoints, no face crops) from
  the loader workers, expanded by ``datasets.shards.expand`` on the training
  device (here the CPU, one torch thread like a CPU training worker);
* per image: JPEG decode, pose decode (stored patches) and pose render (from
  keypoints) each including the paste into the float batch, the on-device
  render of a batch's pose maps (on this CPU: :mod:`datasets.pose.cpu_render`, what
  training runs here; and the batched tensor ops CUDA runs, for reference), the
  render against a JPEG decode at the shards' size and at twice it, and the bytes of
  the stored pose maps against dense alternatives;
* where the augmented path's time goes per pair, before (albumentations
  ``Compose``, worker-side pose render and face crop, dense maps pasted on the
  CPU) and after (the transforms driven directly, pose maps rendered on the device).

Writes ``reports/bench-data.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np
import psutil
import torch

from datasets.files import atomic_write_bytes
from datasets.pose import heatmaps
from datasets.pose.cpu_render import GaussianCanvas
from datasets.pose.face import crop_face
from datasets.raw.layout import find_split, get_layout, read_pairs
from datasets.shards import expand
from datasets.shards.augment import AugmentConfig, Augmenter
from datasets.shards.cpu_images import ImageConverter
from datasets.shards.loader import train_loader
from datasets.shards.samples import decode_image, parse_sample
from datasets.shards.tar import iter_samples, load_manifest
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args

log = logging.getLogger("bench.data")


def _best_rate(fn, count: int, repeats: int) -> float:
    """Items per second of ``fn`` (which processes ``count`` items); best of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return count / min(times)


def loose_pairs(root: str, layout_name: str) -> list[tuple[Path, Path]]:
    layout = get_layout(layout_name)
    files = find_split(root, layout, "train")
    pairs, _ = read_pairs(files.pairs_csv, layout)
    d = files.image_dir
    return [
        (d / p.source, d / p.target) for p in pairs if (d / p.source).is_file() and (d / p.target).is_file()
    ]


def cpu_seconds() -> float:
    """User+system CPU seconds of this process and its live children (the loader workers): what a
    side costs the machine, whatever number of processes spends it."""
    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:  # a worker that ended between the listing and the read
            continue
        total += t.user + t.system
    return total


class DecodeCounter:
    """Counts the loader's JPEG decodes in this process while active."""

    def __enter__(self) -> Self:
        from datasets.shards import loader as loader_module

        self._module, self._original, self.count = loader_module, loader_module.decode_image, 0
        original = self._original

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        loader_module.decode_image = counted
        return self

    def __exit__(self, *exc) -> None:
        self._module.decode_image = self._original


def bench_loose(pairs: list[tuple[Path, Path]], repeats: int, measure: dict | None = None) -> float:
    """Pairs/s of a plain loop over the pairs, one process, two ``cv2.imread`` a pair (a file's
    every pair decodes it again). ``measure`` gets its CPU ms per pair."""

    def run() -> None:
        for a, b in pairs:
            if cv2.imread(str(a), cv2.IMREAD_COLOR) is None or cv2.imread(str(b), cv2.IMREAD_COLOR) is None:
                raise RuntimeError(f"cannot decode {a} or {b}")

    run()  # warm the page cache
    cpu0 = cpu_seconds()
    rate = _best_rate(run, len(pairs), repeats)
    if measure is not None:
        measure.update(cpu_ms_per_pair=1e3 * (cpu_seconds() - cpu0) / (len(pairs) * repeats))
    return rate


def bench_loader(
    shards: Path,
    batch_size: int,
    workers: int,
    augment: AugmentConfig | None,
    epochs: int,
    output: str = "float",
    measure: dict | None = None,
) -> float:
    """Pairs/s of one loader setting; output float (CPU float batch), compact, or training
    (compact batches expanded on the device, as the training loop consumes them). ``measure``
    gets the timed epochs' CPU ms per pair (this process and its loader workers, in the steady
    state where workers run on into the next epoch) and the process count."""
    training = output == "training"
    training_kw: dict[str, Any] = {"poses": "keypoints", "face_crops": False} if training else {}
    loader = train_loader(
        shards,
        rank=0,
        world_size=1,
        batch_size=batch_size,
        num_workers=workers,
        augment=augment,
        compact=output != "float",
        **training_kw,
    )
    key = "source_rgb" if output == "compact" else "source_image"
    feed = expand.Expander.of_loader(loader)
    rates, pairs, cpu0 = [], 0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up (worker start, page cache)
        loader.set_epoch(epoch)
        if epoch == 1:
            cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        batches = expand.DeviceBatches(loader, torch.device("cpu"), feed) if training else loader
        n = sum(b[key].shape[0] for b in batches)
        if epoch:
            rates.append(n / (time.perf_counter() - t0))
            pairs += n
    if measure is not None:
        measure.update(cpu_ms_per_pair=1e3 * (cpu_seconds() - cpu0) / pairs, processes=1 + workers)
    return max(rates)


def decodes_per_epoch(shards: Path, batch_size: int, augment: AugmentConfig | None) -> tuple[int, int]:
    """(JPEG decodes, pairs) of one training-path epoch, counted in this process: each image is
    decoded once per shard visit and reused for every pair of the visit that shares it. Loader
    workers split the shards between them, so the count is the same for any number of them."""
    with DecodeCounter() as counter:
        loader = train_loader(
            shards,
            rank=0,
            world_size=1,
            batch_size=batch_size,
            num_workers=0,
            augment=augment,
            compact=True,
            poses="keypoints",
            face_crops=False,
        )
        loader.set_epoch(0)
        pairs = sum(b["source_rgb"].shape[0] for b in loader)
    return counter.count, pairs


def side_by_side(
    shards: Path, pairs: list[tuple[Path, Path]], batch_size: int, workers: int, rounds: int, epochs: int
) -> dict:
    """The headline ratio: loose cv2 and the training input path (augmentation on) measured in
    alternation, ``rounds`` times, so that a drift in this machine's speed between the two
    (seen here: ±40% from minute to minute) reaches both alike. Best of each, and each round's;
    beside the throughput, what each side spends: CPU per pair over all its processes, the
    process count and the JPEG decodes an epoch (the training path decodes an image once per
    shard visit for all the pairs that share it; the loose loop twice for every pair)."""
    out = []
    for _ in range(rounds):
        loose_m: dict = {}
        train_m: dict = {}
        loose = bench_loose(pairs, epochs, loose_m)
        training = bench_loader(shards, batch_size, workers, AugmentConfig(), epochs, "training", train_m)
        out.append(
            {
                "loose_cv2_pairs_per_s": round(loose, 1),
                "training_pairs_per_s": round(training, 1),
                "ratio": round(training / loose, 3),
                "loose_cpu_ms_per_pair": round(loose_m["cpu_ms_per_pair"], 3),
                "training_cpu_ms_per_pair": round(train_m["cpu_ms_per_pair"], 3),
            }
        )
    decodes, epoch_pairs = decodes_per_epoch(shards, batch_size, AugmentConfig())
    loose_best = max(r["loose_cv2_pairs_per_s"] for r in out)
    training_best = max(r["training_pairs_per_s"] for r in out)
    loose_cpu = statistics.median(r["loose_cpu_ms_per_pair"] for r in out)
    training_cpu = statistics.median(r["training_cpu_ms_per_pair"] for r in out)
    return {
        "workers": workers,
        "rounds": out,
        "loose_cv2_pairs_per_s": loose_best,
        "training_pairs_per_s": training_best,
        "ratio": round(training_best / loose_best, 3),
        "median_round_ratio": round(statistics.median(r["ratio"] for r in out), 3),
        "processes": {"loose_cv2": 1, "training": 1 + workers},
        "decodes_per_epoch": {"loose_cv2": 2 * len(pairs), "training": decodes, "pairs": epoch_pairs},
        # None where a side's CPU time stayed under the clock's tick (a few pairs on a tiny set).
        "cpu_ms_per_pair": {
            "loose_cv2": round(loose_cpu, 3),
            "training": round(training_cpu, 3),
            "ratio": round(training_cpu / loose_cpu, 3) if loose_cpu and training_cpu else None,
        },
    }


def bench_components(shards: Path, manifest: dict, limit: int = 256) -> dict:
    """Per-image cost of the loader's parts, on the stored views of the train shards."""
    size = tuple(manifest["image_size"])
    k, sigma = int(manifest["num_keypoints"]), float(manifest["preprocess"]["heatmap_sigma"])
    views = []
    for shard in (s for s in manifest["shards"] if s["split"] == "train"):
        for key, files in iter_samples((shards / shard["name"]).read_bytes()):
            views.extend(parse_sample(key, files).views)
        if len(views) >= limit:
            break
    views = views[:limit]
    n = len(views)
    jpegs = [bytes(v.jpeg) for v in views]
    poses = [bytes(v.pose) for v in views]
    out = np.zeros((1, k, *size), np.float32)

    def decode_jpegs() -> None:
        for j in jpegs:
            decode_image(j, "bench", size)

    def decode_poses() -> None:
        for p in poses:
            out[:] = 0.0  # stand-in for the zeroed batch tensor the loader allocates
            heatmaps.paste_into(out, [heatmaps.decode(p)])

    def render_poses() -> None:
        for v in views:
            out[:] = 0.0
            heatmaps.paste_into(out, [heatmaps.render_sparse(v.keypoints, size, sigma)])

    def zero_only() -> None:
        for _ in views:
            out[:] = 0.0

    dense = [heatmaps.to_dense(heatmaps.decode(p)) for p in poses]
    pngs = [cv2.imencode(".png", d.reshape(k * size[0], size[1]))[1].tobytes() for d in dense[:64]]

    def decode_pngs() -> None:
        for p in pngs:
            cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_UNCHANGED)

    batch = 8
    keypoints = [
        torch.from_numpy(np.stack([v.keypoints for v in views[i : i + batch]]).astype(np.float32))
        for i in range(0, n - batch + 1, batch)
    ]
    canvas = GaussianCanvas(size, sigma)

    def render_on_device() -> None:  # what training runs on a CPU device
        for kp in keypoints:
            canvas(kp)

    def render_tensor_ops() -> None:  # what it runs on CUDA, here on the CPU
        for kp in keypoints:
            expand.render_gaussians(kp, size, sigma)

    us = {
        name: 1e6 / _best_rate(fn, n if name != "dense_png_decode" else len(pngs), 5)
        for name, fn in (
            ("jpeg_decode", decode_jpegs),
            ("pose_decode_paste", decode_poses),
            ("pose_render_paste", render_poses),
            ("zero_fill", zero_only),
            ("dense_png_decode", decode_pngs),
        )
    }
    for name in ("pose_decode_paste", "pose_render_paste"):
        us[name] = max(us[name] - us["zero_fill"], 0.0)  # the loader's torch.zeros is lazily zeroed
    # Batches of 8 images; the canvas reuses its buffers, the tensor ops allocate a zeroed output.
    us["pose_render_device"] = 1e6 / _best_rate(render_on_device, batch * len(keypoints), 5)
    us["pose_render_tensor_ops"] = 1e6 / _best_rate(render_tensor_ops, batch * len(keypoints), 5)
    return {
        "views": n,
        "us_per_image": {k2: round(v, 1) for k2, v in us.items()},
        "pose_bytes_per_image": round(statistics.mean(len(p) for p in poses), 1),
        "jpeg_bytes_per_image": round(statistics.mean(len(j) for j in jpegs), 1),
        "dense_png_bytes_per_image": round(statistics.mean(len(p) for p in pngs), 1),
        "dense_uint8_bytes_per_image": k * size[0] * size[1],
        "dense_float16_bytes_per_image": 2 * k * size[0] * size[1],
        "pose_share_of_jpeg_decode": {
            "decode": round(us["pose_decode_paste"] / us["jpeg_decode"], 3),
            "render": round(us["pose_render_paste"] / us["jpeg_decode"], 3),
            "render_on_device": round(us["pose_render_device"] / us["jpeg_decode"], 3),
        },
        "render_vs_decode_by_size": [
            render_vs_decode(views, size, s2, sigma, batch) for s2 in (size, (2 * size[0], 2 * size[1]))
        ],
        "augmented_path_us_per_pair": breakdown(
            views, size, sigma, int(manifest["preprocess"]["face_size"]), flip_perm=np.arange(k)
        ),
    }


def render_vs_decode(
    views: list, size: tuple[int, int], target: tuple[int, int], sigma: float, batch: int
) -> dict:
    """µs per image of the CPU device's pose render and of a JPEG decode at ``target`` (H, W).

    The render is timed on the stored keypoints (whole pixels, as annotated: each joint gets a
    copy of one patch) and on the same keypoints moved by the training augmentation (a sub-pixel
    position for every affine-warped image, half of them: those are computed). At another size
    than the shards' the views are resized (cubic) and re-encoded at quality 95, the keypoints
    scaled alike; σ stays ``preprocess.heatmap_sigma`` pixels, as it does for a real dataset at
    that size.
    """
    sy, sx = target[0] / size[0], target[1] / size[1]
    rgbs = [decode_image(bytes(v.jpeg), "bench", size) for v in views]
    jpegs = [
        cv2.imencode(
            ".jpg",
            cv2.resize(r, (target[1], target[0]), interpolation=cv2.INTER_CUBIC),
            [cv2.IMWRITE_JPEG_QUALITY, 95],
        )[1].tobytes()
        if target != size
        else bytes(v.jpeg)
        for r, v in zip(rgbs, views)
    ]
    k = len(views[0].keypoints)
    aug = Augmenter(AugmentConfig(), np.arange(k), 0)
    blank = np.zeros((*target, 3), np.uint8)
    stored, moved = [], []
    for i in range(0, len(views) - batch + 1, batch):
        kp = np.stack([v.keypoints for v in views[i : i + batch]]).astype(np.float32)
        kp = np.where(kp == -1, kp, kp * np.array([sx, sy], np.float32))
        stored.append(torch.from_numpy(kp))
        moved.append(
            torch.from_numpy(np.stack([aug(blank, p, np.zeros(4, np.float32), False).keypoints for p in kp]))
        )
    canvas = GaussianCanvas(target, sigma)

    def render(batches: list[torch.Tensor]) -> None:
        for kp in batches:  # each batch dropped before the next, as training does: its buffer is reused
            canvas(kp)

    decode = 1e6 / _best_rate(lambda: [decode_image(j, "bench", target) for j in jpegs], len(jpegs), 5)
    render_stored = 1e6 / _best_rate(lambda: render(stored), batch * len(stored), 5)
    render_moved = 1e6 / _best_rate(lambda: render(moved), batch * len(moved), 5)
    return {
        "size": list(target),
        "jpeg_decode_us": round(decode, 1),
        "pose_render_device_us": round(render_stored, 1),
        "ratio": round(render_stored / decode, 3),
        "pose_render_device_augmented_us": round(render_moved, 1),
        "ratio_augmented": round(render_moved / decode, 3),
    }


def breakdown(
    views: list, size: tuple[int, int], sigma: float, face_size: int, flip_perm: np.ndarray, batch: int = 8
) -> dict[str, dict[str, float]]:
    """µs per pair of each part of the augmented training input path, before and after.

    Each pair is two views (decode, augment, pose maps) and one face crop (before only).
    Decode counts two JPEGs per pair; the loader decodes each view once per shard visit,
    which this leaves out for both columns alike.
    """
    rgbs = [decode_image(bytes(v.jpeg), "bench", size) for v in views]
    n = len(views)
    before, after = Augmenter(AugmentConfig(), flip_perm, 0), Augmenter(AugmentConfig(), flip_perm, 0)
    moved = [after(r, v.keypoints, v.face_box, v.face_valid) for r, v in zip(rgbs, views)]
    nhwc = np.stack(rgbs[:batch])
    sparse = [heatmaps.render_sparse(m.keypoints, size, sigma) for m in moved[:batch]]
    kp = torch.from_numpy(np.stack([m.keypoints for m in moved[:batch]]))
    canvas, convert = GaussianCanvas(size, sigma), ImageConverter()  # what a CPU training device runs

    def per_image(fn, count: int = n) -> float:
        return 1e6 / _best_rate(fn, count, 5)

    def compose() -> None:  # the albumentations call the loader made before
        for r, v in zip(rgbs, views):
            before.transform(image=r, keypoints=np.asarray(v.keypoints, np.float32))

    parts = {
        "jpeg_decode": per_image(lambda: [decode_image(bytes(v.jpeg), "bench", size) for v in views]),
        "augment_compose": per_image(compose),
        "augment_direct": per_image(
            lambda: [after(r, v.keypoints, v.face_box, v.face_valid) for r, v in zip(rgbs, views)]
        ),
        "pose_render_worker": per_image(
            lambda: [heatmaps.render_sparse(m.keypoints, size, sigma) for m in moved]
        ),
        "face_crop": per_image(
            lambda: [crop_face(m.rgb, tuple(m.face_box), face_size, m.face_valid) for m in moved]
        ),
        "pose_paste_cpu": per_image(
            lambda: heatmaps.paste_into(np.zeros((batch, len(flip_perm), *size), np.float32), sparse), batch
        ),
        "pose_render_device": per_image(lambda: canvas(kp), batch),
        # before: a uint8 CHW transpose in the worker, then convert, scale and shift in torch
        "image_float_cpu": per_image(
            lambda: (
                torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())
                .to(torch.float32)
                .mul_(2.0 / 255.0)
                .sub_(1.0)
            ),
            batch,
        ),
        "image_float_device": per_image(lambda: convert(torch.from_numpy(nhwc)), batch),
    }
    table = {
        "before": {
            "decode": 2 * parts["jpeg_decode"],
            "augment": 2 * parts["augment_compose"],
            "pose maps": 2 * (parts["pose_render_worker"] + parts["pose_paste_cpu"]),
            "face crop": parts["face_crop"],
            "image → float CHW": 2 * parts["image_float_cpu"],
        },
        "after": {
            "decode": 2 * parts["jpeg_decode"],
            "augment": 2 * parts["augment_direct"],
            "pose maps": 2 * parts["pose_render_device"],
            "face crop": 0.0,
            "image → float CHW": 2 * parts["image_float_device"],
        },
    }
    return {side: {k2: round(v, 1) for k2, v in rows.items()} for side, rows in table.items()}


def table(result: dict) -> str:
    loose = result["loose_cv2_pairs_per_s"]
    h, w = result["image_size"]
    side = result["side_by_side"]
    round_ratios = ", ".join(f"{r['ratio']:.2f}" for r in side["rounds"])
    dec, cpu = side["decodes_per_epoch"], side["cpu_ms_per_pair"]
    rows = [
        (
            f"{result['dataset']} at {h}×{w}, batch {result['batch_size']}, {result['train_pairs']} training pairs, "
            f"{result['cpu_count']} CPUs"
        ),
        "",
        f"**Training input path (augmentation on; {side['processes']['training']} processes: this one and "
        f"{side['workers']} loader worker{'s' if side['workers'] != 1 else ''}; {dec['training']} JPEG decodes an epoch, each image once per shard "
        f"visit, reused by every pair that shares it) against loose cv2 (1 process; {dec['loose_cv2']} decodes "
        f"an epoch, two per pair), measured in alternation ({len(side['rounds'])} rounds): "
        f"{side['training_pairs_per_s']:.0f} vs {side['loose_cv2_pairs_per_s']:.0f} pairs/s = "
        f"{side['ratio']:.2f}× at {h}×{w}** (best of each; rounds: {round_ratios}; median "
        f"{side['median_round_ratio']:.2f}). CPU per pair, all processes: {cpu['training']:.2f} vs "
        f"{cpu['loose_cv2']:.2f} ms"
        + (
            f" = {cpu['ratio']:.2f}×"
            if cpu["ratio"] is not None
            else " (too little work for the CPU clock's resolution)"
        )
        + " (median of the rounds).",
        "",
        "| reader | pairs/s | × loose cv2 |",
        "|---|---:|---:|",
        f"| loose JPEG files, cv2.imread ×2 per pair | {loose:.0f} | 1.00 |",
    ]
    names = {
        "float": "float batch (CPU)",
        "compact": "compact batch (uint8 images, sparse poses)",
        "training": "**training input path** (compact, expanded on the device)",
    }
    for row in result["loader"]:
        out = names[row["output"]]
        rows.append(
            f"| loader → {out}, {row['workers']} worker(s), augment {'on' if row['augment'] else 'off'} "
            f"| {row['pairs_per_s']:.0f} | {row['pairs_per_s'] / loose:.2f} |"
        )
    c = result["components"]
    u = c["us_per_image"]
    rows += [
        "",
        "| per image | µs | bytes |",
        "|---|---:|---:|",
        f"| JPEG decode (cv2) | {u['jpeg_decode']:.0f} | {c['jpeg_bytes_per_image']:.0f} |",
        (
            f"| pose maps: decode stored patches + paste | {u['pose_decode_paste']:.0f} | "
            f"{c['pose_bytes_per_image']:.0f} |"
        ),
        f"| pose maps: render from keypoints + paste | {u['pose_render_paste']:.0f} | 0 |",
        (
            f"| pose maps: render on the CPU device (batch of 8, reused buffers; what training runs) | "
            f"{u['pose_render_device']:.1f} | 0 |"
        ),
        (
            f"| pose maps: batched tensor ops (what CUDA runs), here on the CPU, zeroed output allocated | "
            f"{u['pose_render_tensor_ops']:.1f} | 0 |"
        ),
        (
            f"| pose maps: dense uint8 PNG decode (alternative) | {u['dense_png_decode']:.0f} | "
            f"{c['dense_png_bytes_per_image']:.0f} |"
        ),
        f"| pose maps: dense float16 (not stored) | – | {c['dense_float16_bytes_per_image']} |",
        "",
        (
            "| size (H×W) | JPEG decode µs | on-device pose render µs, stored / augmented keypoints "
            "| render / decode, stored / augmented |"
        ),
        "|---|---:|---:|---:|",
        *(
            f"| {r['size'][0]}×{r['size'][1]} | {r['jpeg_decode_us']:.0f} | {r['pose_render_device_us']:.1f} / "
            f"{r['pose_render_device_augmented_us']:.1f} | {r['ratio']:.3f} / {r['ratio_augmented']:.3f} |"
            for r in c["render_vs_decode_by_size"]
        ),
        "",
        "| augmented path, µs per pair | before | after |",
        "|---|---:|---:|",
    ]
    parts = c["augmented_path_us_per_pair"]
    for name in parts["before"]:
        rows.append(f"| {name} | {parts['before'][name]:.0f} | {parts['after'][name]:.0f} |")
    rows.append(f"| total | {sum(parts['before'].values()):.0f} | {sum(parts['after'].values()):.0f} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.bench data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", default="synthetic_fashion")
    parser.add_argument("--shards", help="shards folder (default: datasets.NAME.shards)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per loader setting (best is kept)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternations of loose cv2 and the training path for the headline ratio",
    )
    parser.add_argument("--out", default="reports/bench-data.json")
    add_config_args(parser)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be >= 1")
    setup_logging(args.log_level, "bench data")
    cfg = config_from_args(args)
    spec = dataset_from_args(cfg, args.dataset)
    shards = Path(args.shards or spec.shards)
    try:
        manifest = load_manifest(shards)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    pairs = loose_pairs(spec.root, spec.layout)
    result: dict = {
        "dataset": args.dataset,
        "image_size": manifest["image_size"],
        "batch_size": args.batch_size,
        "train_pairs": len(pairs),
        "cpu_count": os.cpu_count(),
        "cv2_threads": cv2.getNumThreads(),
        "loose_cv2_pairs_per_s": round(bench_loose(pairs, max(args.epochs, 1)), 1),
        "loader": [],
    }
    torch.set_num_threads(1)  # as a CPU training worker (train.threads_per_worker)
    for output in ("float", "compact", "training"):
        for augment in (False, True):
            for workers in args.workers:
                rate = bench_loader(
                    shards,
                    args.batch_size,
                    workers,
                    AugmentConfig() if augment else None,
                    args.epochs,
                    output,
                )
                result["loader"].append(
                    {
                        "workers": workers,
                        "augment": augment,
                        "output": output,
                        "pairs_per_s": round(rate, 1),
                        "ratio_to_loose": round(rate / result["loose_cv2_pairs_per_s"], 3),
                    }
                )
    result["side_by_side"] = side_by_side(
        shards, pairs, args.batch_size, max(args.workers), args.rounds, args.epochs
    )
    result["components"] = bench_components(shards, manifest)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(table(result))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
