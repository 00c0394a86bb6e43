"""Training benchmark: ``python -m pipelines.bench train [--images-per-worker N] [--dataset NAME]``.

Runs ``python -m pipelines.train`` as users do (Ray, CPU: gloo, one thread per worker), side by
side in one invocation on one machine:

1. 1 worker and 2 workers, same per-worker batch and images per worker: training images/s
    (steps only: first step, checkpoints, logging excluded; and over the whole run) and the 2/1
   ratio of the steps-only figure (goal >= 1.8);
2. time from the command to the first finished step (Ray start, worker start, model build);
3. a third, 2-worker run whose DDP all-reduce runs synchronously in a timed comm hook, giving
   the fraction of step time spent in data loading, forward/backward and gradient all-reduce.
   (Synchronous: nothing overlaps, so its all-reduce share is an upper bound.)

Runs write into a temporary folder (checkpoints, summaries) without MLflow; the report goes
to ``reports/bench-train.json``. Figures from different machines, or from a machine busy with
other work, are not comparable: the report records CPU count and load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.bench import train_device
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import TrainSummary

log = logging.getLogger("bench.train")
KEYS = (
    "images_per_s",
    "images_per_s_steady",
    "time_to_first_step_s",
    "time_per_step_s",
    "fraction_data",
    "fraction_compute",
    "fraction_allreduce",
    "steps",
    "images",
    "workers",
    "skipped_steps",
)


def run_training(
    workers: int, args: argparse.Namespace, root: Path, run: str, profile: bool
) -> dict[str, Any]:
    from pipelines.config.params import load_config

    cfg = load_config(args.params)
    shards = Path(cfg.dataset(args.dataset).shards)
    shards = shards if shards.is_absolute() else Path.cwd() / shards
    batch = cfg.train.batch_size
    total = args.images_per_worker * max(workers, 1)
    cmd = [
        sys.executable,
        "-m",
        "pipelines.train",
        "--params",
        args.params,
        "--dataset",
        args.dataset,
        "--workers",
        str(workers),
        "--run-name",
        run,
        "--no-mlflow",
        "--set",
        f"datasets.{args.dataset}.shards={shards}",
        "--set",
        f"train.total_images={total}",
        "--set",
        f"train.checkpoint_every_images={total}",
        "--set",
        f"train.log_every_images={batch * max(workers, 1)}",
        "--set",
        f"train.grid_every_images={total}",
        "--set",
        "train.max_failures=0",
        # Every timed step a full GAN step: params.yaml's warm-up phases would fill a short run.
        "--set",
        "optim.flow_warmup_steps=0",
        "--set",
        "optim.generator_warmup_steps=0",
    ]
    if profile:
        cmd.append("--profile-comm")
    env = {**os.environ, "ATTNFLOW_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)  # always a local Ray: the figures are this machine's
    log.info("%d worker(s)%s, %d images ...", workers, " (all-reduce timed)" if profile else "", total)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"training with {workers} workers failed:\n{proc.stderr[-3000:]}")
    summary = TrainSummary.load(RunFolder.of(run, root=root).summary).to_dict()
    out = {k: summary.get(k) for k in KEYS}
    out["wall_s"] = time.time() - t0
    return out


def device_main(args: argparse.Namespace) -> int:
    report = train_device.run(args)
    out = Path(args.out or f"reports/bench-{'gpu' if args.device == 'cuda' else 'cpu-device'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(train_device.format_table(report))
    print(f"\nreport: {out} ({report['wall_s']:.0f} s)")
    return 0 if any("images_per_s_steady" in r for r in report["runs"]) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.bench train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="synthetic_fashion")
    parser.add_argument(
        "--images-per-worker",
        type=int,
        default=64,
        help="training images per worker in each run (default 64)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="report (default: reports/bench-train.json; with --device: reports/bench-<device>.json)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="the device benchmark instead (pipelines/bench/train_device.py): one Ray worker on this "
        "device at 256x176, eager and compiled, several batches, with MFU; its options follow",
    )
    train_device.add_args(parser)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "bench train")
    if args.device is not None:
        return device_main(args)
    args.out = args.out or "reports/bench-train.json"

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        one = run_training(1, args, root, "w1", profile=False)
        two = run_training(2, args, root, "w2", profile=False)
        prof = run_training(2, args, root, "w2p", profile=True)
    ratio = two["images_per_s_steady"] / one["images_per_s_steady"] if one["images_per_s_steady"] else None
    import torch

    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "dataset": args.dataset,
        "images_per_worker": args.images_per_worker,
        "workers_1": one,
        "workers_2": two,
        "workers_2_allreduce_timed": prof,
        "speedup_2_over_1": ratio,
        "goal_speedup": 1.8,
        "step_time_fractions_2_workers": {
            "data": prof["fraction_data"],
            "forward_backward": prof["fraction_compute"],
            "allreduce": prof["fraction_allreduce"],
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))

    def row(name: str, r: dict) -> str:
        return (
            f"| {name} | {r['images_per_s_steady']:.2f} | {r['images_per_s']:.2f} | {r['time_per_step_s']:.2f} "
            f"| {r['time_to_first_step_s']:.0f} |"
        )

    print("| run | images/s (steps only) | images/s (whole run) | s/step | command → first step (s) |")
    print("|---|---|---|---|---|")
    print(row("1 worker", one))
    print(row("2 workers", two))
    print(row("2 workers, all-reduce timed", prof))
    print(
        f"\nspeedup 2/1: {ratio:.2f} (goal >= 1.8); 2-worker step time: data {prof['fraction_data']:.1%}, "
        f"forward/backward {prof['fraction_compute']:.1%}, all-reduce {prof['fraction_allreduce']:.1%}"
    )
    print(
        f"load average before/after: {load_before[0]:.1f} / {report['machine']['loadavg_after'][0]:.1f} "
        f"on {os.cpu_count()} CPUs; report: {out}"
    )
    return 0
