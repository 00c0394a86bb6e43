"""``python -m pipelines.bench prepare``: official-release trees → the field's layout, per 1,000 images.

Two release-shaped trees are drawn once by the synthetic renderer (datasets/synthetic/release_trees.py,
no faults, so every image is converted) into a cache folder:

* DeepFashion In-shop ``img_highres`` at the release's 750×1101, resized to the 256×176 frame
  and re-encoded (``prepare.deepfashion`` defaults);
* Market-1501 at its own 128×64: the JPEGs are already at the frame and are copied byte for byte.

Each is prepared as ``python -m pipelines.prepare --from`` does it (plan the release, then convert
and write the layout) in this process and on 1 and 2 Ray workers of one local Ray.  Ray is started
before the clock (its start-up is reported on its own line), and the release's files are read once
before timing so every run finds them in the page cache.  The layouts of 0, 1 and 2 workers must be
byte-identical, or the bench exits 1.

Writes ``reports/bench-prepare.json`` and prints a Markdown table with seconds per 1,000 images and
the speed-up of 2 workers over 1 and over in-process, with the load average it ran under.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

from datasets.files import atomic_write_bytes
from datasets.parallel import connect, shutdown
from datasets.raw.frame import FitPolicy
from datasets.raw.release_writer import write_release
from datasets.raw.releases import plan_release
from datasets.specs import PrepareSpec
from datasets.synthetic.release_trees import FRAME, make_deepfashion_release, make_market_release
from pipelines.config.logs import add_log_level_arg, setup_logging

log = logging.getLogger("bench.prepare")
ROOT = Path(__file__).resolve().parents[2]
VIEWS = 4  # views per identity, as the In-shop items mostly have
RELEASES = {
    "deepfashion": "DeepFashion img_highres 750×1101 → 256×176 (resized)",
    "market": "Market-1501 128×64 (copied)",
}


def release_tree(kind: str, cache: Path, images: int) -> Path:
    """The release tree of about ``images`` images (whole identities), rendered once into ``cache``."""
    identities = max(2, math.ceil(images / VIEWS))
    test = max(1, identities // 10)
    root = cache / f"{kind}-{identities}x{VIEWS}"
    done = root / ".complete"  # a tree cut short by an interrupted run is rendered again
    if not done.is_file():
        shutil.rmtree(root, ignore_errors=True)
        log.info("rendering the %s tree (%d identities × %d views) into %s", kind, identities, VIEWS, root)
        if kind == "deepfashion":
            make_deepfashion_release(
                root, identities - test, test, VIEWS, size=(1101, 750), full_size_first=False, faults=False
            )
        else:
            make_market_release(root, identities - test, test, VIEWS, faults=False)
        done.write_text("")
    return root


def warm(root: Path) -> int:
    """Read every file once, so no timed run pays for the first read from disk; returns the bytes."""
    return sum(len(p.read_bytes()) for p in root.rglob("*") if p.is_file())


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def timed_prepare(kind: str, root: Path, out: Path, workers: int, chunk_size: int) -> tuple[float, int, str]:
    """(seconds, images written, digest of the layout) of one prepare, planning included."""
    shutil.rmtree(out, ignore_errors=True)
    spec = PrepareSpec()
    policy = FitPolicy(FRAME[kind], spec.fit, spec.aspect_tolerance, spec.jpeg_quality)
    t0 = time.perf_counter()
    manifest = write_release(plan_release(kind, root), out, policy, workers=workers, chunk_size=chunk_size)
    seconds = time.perf_counter() - t0
    written = sum(manifest["images"]["written"].values())
    if manifest["images"]["rejected"]:
        raise RuntimeError(
            f"{kind}: {manifest['images']['rejected']} images rejected; see {out}/prepare-rejects.csv"
        )
    return seconds, written, digest(out)


def table(r: dict) -> str:
    rows = [
        (
            "| release | images | in-process s/1k | 1 Ray worker s/1k | 2 Ray workers s/1k | "
            "2 workers ÷ 1 | 2 workers ÷ in-process |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, label in RELEASES.items():
        k = r["releases"][kind]
        s = {w: k["workers"][w]["s_per_1000"] for w in ("0", "1", "2")}
        rows.append(
            f"| {label} | {k['images']} | {s['0']:.1f} | {s['1']:.1f} | {s['2']:.1f} | "
            f"{s['1'] / s['2']:.2f}× | {s['0'] / s['2']:.2f}× |"
        )
    before, after = (
        ", ".join(f"{v:.1f}" for v in r[k]) for k in ("load_average_before", "load_average_after")
    )
    rows += [
        "",
        (
            f"Ray start-up (not counted above): {r['ray_start_s']:.1f} s; {r['chunk_size']} images per Ray "
            f"task; {r['cpu_count']} CPUs, load average (1/5/15 min) {before} as the timed runs began, {after} "
            "after."
        ),
    ]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.bench prepare", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--images",
        type=int,
        default=400,
        help=f"images per release tree (whole identities of {VIEWS} views; default 400)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=25,
        help="images per Ray task (prepare.<name>.chunk_size; small enough that 2 workers share "
        "a few hundred images evenly; default 25)",
    )
    parser.add_argument(
        "--cache",
        default="/tmp/attnflow-bench-prepare",
        help="where the release trees are rendered once and the layouts written",
    )
    parser.add_argument("--out", default="reports/bench-prepare.json")
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "bench")
    if args.images < 2 or args.chunk_size < 1:
        parser.error("--images must be >= 2 and --chunk-size >= 1")
    cache = Path(args.cache)
    trees = {kind: release_tree(kind, cache, args.images) for kind in RELEASES}
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    for kind, root in trees.items():
        log.info("%s: %.1f MB read ahead", kind, warm(root) / 1e6)
        seconds, images, base = timed_prepare(kind, root, cache / f"{kind}-out-0", 0, args.chunk_size)
        results[kind] = {
            "images": images,
            "digests": {"0": base},
            "workers": {"0": {"seconds": seconds, "s_per_1000": 1000 * seconds / images}},
        }
    t0 = time.perf_counter()
    started = connect(None, 2, {"OMP_NUM_THREADS": "1"}, ROOT)
    ray_start = time.perf_counter() - t0
    try:
        for kind, root in trees.items():
            for n in (1, 2):
                seconds, images, dig = timed_prepare(
                    kind, root, cache / f"{kind}-out-{n}", n, args.chunk_size
                )
                results[kind]["workers"][str(n)] = {"seconds": seconds, "s_per_1000": 1000 * seconds / images}
                results[kind]["digests"][str(n)] = dig
    finally:
        shutdown(started)
    same = all(len(set(r["digests"].values())) == 1 for r in results.values())
    for r in results.values():
        w = r["workers"]
        r["speedup_2_over_1"] = w["1"]["seconds"] / w["2"]["seconds"]
        r["speedup_2_over_0"] = w["0"]["seconds"] / w["2"]["seconds"]
    result = {
        "releases": results,
        "chunk_size": args.chunk_size,
        "ray_start_s": ray_start,
        "same_bytes_for_0_1_2_workers": same,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    atomic_write_bytes(Path(args.out), (json.dumps(result, indent=2) + "\n").encode())
    print(table(result))
    print(f"\nsame layout bytes for 0/1/2 workers: {same}; written {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
