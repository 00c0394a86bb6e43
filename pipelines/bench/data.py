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
* per image: JPEG decode, pose decode (stored patches) and pose render (from
  keypoints) each including the paste into the float batch, and the bytes of
  the stored pose maps against dense alternatives.

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

import cv2
import numpy as np

from datasets.files import atomic_write_bytes
from datasets.pose import heatmaps
from datasets.raw.layout import find_split, get_layout, read_pairs
from datasets.shards.augment import AugmentConfig
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
    return [(d / p.source, d / p.target) for p in pairs if (d / p.source).is_file() and (d / p.target).is_file()]


def bench_loose(pairs: list[tuple[Path, Path]], repeats: int) -> float:
    def run() -> None:
        for a, b in pairs:
            if cv2.imread(str(a), cv2.IMREAD_COLOR) is None or cv2.imread(str(b), cv2.IMREAD_COLOR) is None:
                raise RuntimeError(f"cannot decode {a} or {b}")

    run()  # warm the page cache
    return _best_rate(run, len(pairs), repeats)


def bench_loader(shards: Path, batch_size: int, workers: int, augment: AugmentConfig | None, epochs: int,
                 compact: bool = False) -> float:
    loader = train_loader(shards, rank=0, world_size=1, batch_size=batch_size, num_workers=workers,
                          augment=augment, compact=compact)
    key = "source_rgb" if compact else "source_image"
    rates = []
    for epoch in range(epochs + 1):  # epoch 0 warms up (worker start, page cache)
        loader.set_epoch(epoch)
        t0 = time.perf_counter()
        n = sum(b[key].shape[0] for b in loader)
        if epoch:
            rates.append(n / (time.perf_counter() - t0))
    return max(rates)


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

    us = {name: 1e6 / _best_rate(fn, n if name != "dense_png_decode" else len(pngs), 5)
          for name, fn in (("jpeg_decode", decode_jpegs), ("pose_decode_paste", decode_poses),
                           ("pose_render_paste", render_poses), ("zero_fill", zero_only),
                           ("dense_png_decode", decode_pngs))}
    for name in ("pose_decode_paste", "pose_render_paste"):
        us[name] = max(us[name] - us["zero_fill"], 0.0)  # the loader's torch.zeros is lazily zeroed
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
        },
    }


def table(result: dict) -> str:
    loose = result["loose_cv2_pairs_per_s"]
    rows = ["| reader | pairs/s | × loose cv2 |", "|---|---:|---:|",
            f"| loose JPEG files, cv2.imread ×2 per pair | {loose:.0f} | 1.00 |"]
    for row in result["loader"]:
        out = ("float batch" if row["output"] == "float"
               else "compact batch (uint8 images, sparse poses)")
        rows.append(f"| loader → {out}, {row['workers']} worker(s), augment {'on' if row['augment'] else 'off'} "
                    f"| {row['pairs_per_s']:.0f} | {row['pairs_per_s'] / loose:.2f} |")
    c = result["components"]
    u = c["us_per_image"]
    rows += ["", "| per image | µs | bytes |", "|---|---:|---:|",
             f"| JPEG decode (cv2) | {u['jpeg_decode']:.0f} | {c['jpeg_bytes_per_image']:.0f} |",
             f"| pose maps: decode stored patches + paste | {u['pose_decode_paste']:.0f} | "
             f"{c['pose_bytes_per_image']:.0f} |",
             f"| pose maps: render from keypoints + paste | {u['pose_render_paste']:.0f} | 0 |",
             f"| pose maps: dense uint8 PNG decode (alternative) | {u['dense_png_decode']:.0f} | "
             f"{c['dense_png_bytes_per_image']:.0f} |",
             f"| pose maps: dense float16 (not stored) | – | {c['dense_float16_bytes_per_image']} |"]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench data", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synthetic_fashion")
    parser.add_argument("--shards", help="shards folder (default: datasets.NAME.shards)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader setting (best is kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="reports/bench-data.json")
    add_config_args(parser)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
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
        "dataset": args.dataset, "image_size": manifest["image_size"], "batch_size": args.batch_size,
        "train_pairs": len(pairs), "cpu_count": os.cpu_count(), "cv2_threads": cv2.getNumThreads(),
        "loose_cv2_pairs_per_s": round(bench_loose(pairs, max(args.epochs, 1)), 1),
        "loader": [],
    }
    for compact in (False, True):
        for augment in (False, True):
            for workers in args.workers:
                rate = bench_loader(shards, args.batch_size, workers, AugmentConfig() if augment else None,
                                    args.epochs, compact)
                result["loader"].append({"workers": workers, "augment": augment, "output": "compact" if compact
                                         else "float", "pairs_per_s": round(rate, 1),
                                         "ratio_to_loose": round(rate / result["loose_cv2_pairs_per_s"], 3)})
    result["components"] = bench_components(shards, manifest)
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(table(result))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
