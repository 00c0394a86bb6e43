"""``python -m pipelines.bench preprocess``: preprocessing on 1 and 2 Ray workers, and shards read
from a local S3 server against local disk.

On a synthetic DeepFashion-layout set of a few thousand images (rendered once into a cache folder):

* images/s of ``datasets.shards.build.preprocess`` in this process (``workers=0``) and on 1 and 2
  Ray workers of one local Ray (started before the clock, so its start-up is not counted; it is
  reported separately), with the speed-up of 2 workers over 1;
* the per-image cost against the floor of any preprocessing: read + decode + one JPEG encode of
  each image (one process, the same images);
* training-loader pairs/s (compact batches, one epoch, in-process) from the shards on local disk
  and from the same shards in a bucket of a local S3-compatible server (``moto_server`` on
  127.0.0.1), each shard's sha256 checked as it is read in both.

Writes ``reports/bench-preprocess.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Self

import cv2
import numpy as np
from PIL import Image

from datasets.files import atomic_write_bytes
from datasets.parallel import connect, shutdown
from datasets.shards.build import preprocess
from datasets.shards.loader import train_loader
from datasets.specs import DatasetSpec, PreprocessConfig, SynthesizeSpec
from datasets.synthetic.fashion import write_dataset
from pipelines.config.logs import add_log_level_arg, setup_logging

log = logging.getLogger("bench.preprocess")
ROOT = Path(__file__).resolve().parents[2]


def synthetic_set(folder: Path, identities: int, views: int) -> tuple[DatasetSpec, int]:
    """A DeepFashion-layout set at 128×88 (rendered once; reused when the folder exists)."""
    test_ids = max(1, identities // 10)
    spec = SynthesizeSpec(
        generator="figure",
        seed=7,
        train_identities=identities - test_ids,
        test_identities=test_ids,
        views_per_identity=views,
    )
    if not (folder / "fasion-pairs-test.csv").is_file():
        write_dataset(spec, folder)
    images = sum(1 for p in folder.glob("*/*.jpg"))
    return DatasetSpec(
        layout="deepfashion", root=str(folder), image_size=(128, 88), source_size=(128, 88), shards=""
    ), images


def floor_rate(root: Path, jpeg_quality: int) -> float:
    """Images/s of read + full decode + one JPEG encode, in one process."""
    paths = sorted(root.glob("*/*.jpg"))
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
        cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    return len(paths) / (time.perf_counter() - t0)


def timed_preprocess(spec: DatasetSpec, cfg: PreprocessConfig, out: Path, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    preprocess("bench", spec, cfg, out, None, None, show_progress=False, workers=workers)
    return time.perf_counter() - t0


def loader_rate(shards: str, batch_size: int) -> float:
    loader = train_loader(
        shards, rank=0, world_size=1, batch_size=batch_size, num_workers=0, augment=None, compact=True
    )
    loader.set_epoch(0)
    t0 = time.perf_counter()
    pairs = sum(len(b["source_name"]) for b in loader)
    return pairs / (time.perf_counter() - t0)


class LocalS3:
    """``moto_server`` on a free loopback port with one bucket; sets this process's S3 client env."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"moto_server did not answer on {self.url}")
        # moto's test credentials, for this process only (the bench never reads real ones).
        os.environ.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def table(r: dict) -> str:
    p = r["preprocess"]
    rows = [
        "| what | images/s | s | per image (ms) | × floor cost |",
        "|---|---:|---:|---:|---:|",
        (
            f"| floor: read + decode + JPEG encode, 1 process | {r['floor_images_per_s']:.0f} | | "
            f"{1000 / r['floor_images_per_s']:.2f} | 1.00 |"
        ),
    ]
    for key in ("0", "1", "2"):
        rate = p[key]["images_per_s"]
        label = "in-process (workers 0)" if key == "0" else f"{key} Ray worker{'s' if key == '2' else ''}"
        rows.append(
            f"| preprocess, {label} | {rate:.0f} | {p[key]['seconds']:.1f} | {1000 / rate:.2f} | "
            f"{r['floor_images_per_s'] / rate:.2f} |"
        )
    rows += [
        "",
        (
            f"speed-up 2 Ray workers / 1: **{r['speedup_2_over_1']:.2f}** (goal 1.8); Ray start-up "
            f"(not counted above): {r['ray_start_s']:.1f} s; {r['images']} images, {r['shards']} shards, "
            f"{r['shard_bytes'] / 1e6:.1f} MB ({r['shard_bytes'] / r['images'] / 1e3:.1f} kB per image)"
        ),
        "",
        "| loader, compact batches, 1 epoch in-process | pairs/s |",
        "|---|---:|",
        f"| shards on local disk | {r['loader_pairs_per_s']['local']:.0f} |",
        f"| shards in a local S3 bucket (moto on 127.0.0.1) | {r['loader_pairs_per_s']['s3']:.0f} |",
    ]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.bench preprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--identities", type=int, default=750, help="identities (4 views each by default)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument(
        "--cache", default="/tmp/attnflow-bench-preprocess", help="where the set is rendered once"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="reports/bench-preprocess.json")
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "bench")
    cache = Path(args.cache)
    spec, images = synthetic_set(cache / f"raw-{args.identities}x{args.views}", args.identities, args.views)
    cfg = replace(PreprocessConfig(), shard_size=16)  # enough shards for 2 workers to share evenly
    log.info("%d images in %s", images, spec.root)
    floor = floor_rate(Path(spec.root), cfg.jpeg_quality)
    results: dict[str, dict] = {}
    seconds = timed_preprocess(spec, cfg, cache / "shards", 0)
    results["0"] = {"seconds": seconds, "images_per_s": images / seconds}
    t0 = time.perf_counter()
    started = connect(None, 2, {"OMP_NUM_THREADS": "1"}, ROOT)
    ray_start = time.perf_counter() - t0
    try:
        for n in (1, 2):
            seconds = timed_preprocess(spec, cfg, cache / f"shards-{n}", n)
            results[str(n)] = {"seconds": seconds, "images_per_s": images / seconds}
    finally:
        shutdown(started)
    manifest = json.loads((cache / "shards" / "manifest.json").read_text())
    same = all(
        (cache / "shards" / s["name"]).read_bytes() == (cache / f"shards-{n}" / s["name"]).read_bytes()
        for n in (1, 2)
        for s in manifest["shards"]
    )
    with LocalS3():
        url = "s3://bench/shards"
        preprocess("bench", spec, cfg, url, None, None, show_progress=False, workers=0)
        rates = {
            "local": loader_rate(str(cache / "shards"), args.batch_size),
            "s3": loader_rate(url, args.batch_size),
        }
    result = {
        "images": images,
        "shards": len(manifest["shards"]),
        "shard_bytes": sum(s["bytes"] for s in manifest["shards"]),
        "floor_images_per_s": floor,
        "preprocess": results,
        "speedup_2_over_1": results["2"]["images_per_s"] / results["1"]["images_per_s"],
        "ray_start_s": ray_start,
        "same_bytes_for_0_1_2_workers": same,
        "loader_pairs_per_s": rates,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(table(result))
    print(f"\nsame shard bytes for 0/1/2 workers: {same}; written {args.out}")
    return 0 if same else 1
