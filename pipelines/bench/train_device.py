"""``python -m pipelines.bench train --device cuda``: the real training command on one GPU worker.

What a user's GPU run does, measured: synthetic data rendered at the paper's 256×176 and
preprocessed into shards, then ``python -m pipelines.train`` on Ray with one GPU worker (nccl,
bf16 autocast, channels-last, fused Adam), eager and compiled, at several per-worker batches.
Each run reports images/s over the steady steps, the step-time split the loop measures (waiting
for data, the step itself, gradient all-reduce timed synchronously), and MFU: images/s × training
FLOPs per image (G, D, face D and the loss backbone, forward and backward, counted by
``torch.utils.flop_counter`` on one step) over the GPU's dense bf16 peak. Peak and FLOP count are
written into the report beside the result.

A run that does not fit the time budget (``--budget-s``) is skipped and listed as such, so
``make gpu-check`` always ends with a report. ``--device cpu`` with a small ``--size`` and
``--model default`` runs the same code on a CPU (how the benchmark itself is tested).
"""

from __future__ import annotations

import argparse
import dataclasses
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

from model.config import ModelConfig
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import TrainSummary

log = logging.getLogger("bench.train")
DATASET = "synthetic_fashion"
# The paper's model (profiles/deepfashion-paper-gpu.yaml; tests/test_profiles.py holds the two equal).
PAPER_MODEL = {k: v for k, v in dataclasses.asdict(ModelConfig.paper()).items() if k != "variant"}


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def data_sets(size: tuple[int, int], identities: int, tmp: Path) -> list[str]:
    """``--set`` overrides that point the dataset at ``tmp`` and render it at ``size``."""
    h, w = size
    return [
        "--set",
        f"datasets.{DATASET}.root={tmp / 'raw'}",
        "--set",
        f"datasets.{DATASET}.shards={tmp / 'shards'}",
        "--set",
        f"datasets.{DATASET}.image_size=[{h}, {w}]",
        "--set",
        f"datasets.{DATASET}.source_size=[{h}, {w}]",
        "--set",
        f"synthesize.{DATASET}.height={h}",
        "--set",
        f"synthesize.{DATASET}.width={w}",
        "--set",
        f"synthesize.{DATASET}.train_identities={identities}",
        "--set",
        f"synthesize.{DATASET}.test_identities=2",
    ]


def model_sets(model: str) -> list[str]:
    if model != "paper":
        return []
    return [a for k, v in PAPER_MODEL.items() for a in ("--set", f"model.{k}={json.dumps(v)}")]


def build_data(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> list[str]:
    sets = data_sets(tuple(args.size), args.identities, tmp)
    t0 = time.time()
    _run(
        [
            sys.executable,
            "-m",
            "pipelines.synthesize",
            "--dataset",
            DATASET,
            "--no-contact",
            "--no-progress",
            "--params",
            args.params,
            *sets,
        ],
        env,
        "synthesize",
    )
    _run(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--dataset",
            DATASET,
            "--no-figure",
            "--quiet",
            "--workers",
            str(args.preprocess_workers),
            "--metrics",
            str(tmp / "preprocess.json"),
            "--params",
            args.params,
            *sets,
        ],
        env,
        "preprocess",
    )
    log.info("data: %s at %dx%d in %.0f s", DATASET, args.size[0], args.size[1], time.time() - t0)
    return sets


def train_once(
    args: argparse.Namespace, sets: list[str], env: dict[str, str], root: Path, batch: int, compile_: str
) -> dict[str, Any]:
    run = f"b{batch}-{compile_}"
    total = batch * args.steps
    cmd = [
        sys.executable,
        "-m",
        "pipelines.train",
        "--params",
        args.params,
        "--dataset",
        DATASET,
        "--workers",
        "1",
        "--run-name",
        run,
        "--no-mlflow",
        "--profile-comm",
        *sets,
        *model_sets(args.model),
        "--set",
        f"train.device={args.device}",
        "--set",
        f"train.batch_size={batch}",
        "--set",
        f"optim.compile={compile_}",
        "--set",
        f"train.total_images={total}",
        "--set",
        f"train.checkpoint_every_images={total}",
        "--set",
        f"train.grid_every_images={total}",
        "--set",
        f"train.log_every_images={batch * max(args.steps // 4, 1)}",
        "--set",
        "train.max_failures=0",
        "--set",
        f"train.loader_workers={args.loader_workers}",
        # Every timed step a full GAN step: params.yaml's warm-up phases would fill a short run.
        "--set",
        "optim.flow_warmup_steps=0",
        "--set",
        "optim.generator_warmup_steps=0",
    ]
    t0 = time.time()
    _run(cmd, {**env, "ATTNFLOW_ROOT": str(root)}, f"training at batch {batch} ({compile_})")
    summary = TrainSummary.load(RunFolder.of(run, root=root).summary).to_dict()
    keys = (
        "images_per_s_steady",
        "images_per_s",
        "time_per_step_s",
        "time_to_first_step_s",
        "fraction_data",
        "fraction_compute",
        "fraction_allreduce",
        "fraction_h2d",
        "fraction_expand",
        "fraction_forward_backward",
        "fraction_check_optimizer_ema",
        "steps",
        "skipped_steps",
    )
    return {
        **{k: summary.get(k) for k in keys},
        "batch": batch,
        "compile": compile_,
        "wall_s": time.time() - t0,
    }


def flops_per_image(args: argparse.Namespace) -> float:
    """Training FLOPs of one image: one counted GanStep.step at batch 2, halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model.config import LossConfig, ModelConfig, OptimConfig
    from model.discriminator import build_discriminators
    from model.gan import GanStep, prepare_module
    from model.generator import build_generator
    from pipelines.bench.model import make_batch

    dev = torch.device(args.device)
    cfg = ModelConfig(**(PAPER_MODEL if args.model == "paper" else {}))
    optim = OptimConfig(compile="never")
    g = prepare_module(build_generator(cfg), dev, optim)
    d, d_face = build_discriminators(cfg)
    step = GanStep(
        g,
        prepare_module(d, dev, optim),
        prepare_module(d_face, dev, optim) if d_face else None,
        cfg,
        LossConfig(),
        optim,
    )
    x = make_batch(2, tuple(args.size), dev)
    step.step(x)
    counter = FlopCounterMode(display=False)
    with counter:
        step.step(x)
    return counter.get_total_flops() / 2


def peak_flops(device: str) -> tuple[str, float | None]:
    import torch

    from pipelines.bench.model import GPU_BF16_PEAK

    if device != "cuda":
        return platform.processor() or "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((v for k, v in GPU_BF16_PEAK.items() if k in name), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda needs a CUDA device (torch.cuda.is_available() is False)")
    start = time.time()
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)  # a local Ray: the figures are this machine's
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-device-") as tmp:
        root = Path(tmp)
        sets = build_data(args, root, env)
        per_image = flops_per_image(args)
        name, peak = peak_flops(args.device)
        plan = [(b, c) for c in args.compile for b in args.batches]
        for batch, compile_ in plan:
            spent = time.time() - start
            if runs and spent + max(r["wall_s"] for r in runs) * 1.5 > args.budget_s:
                runs.append(
                    {"batch": batch, "compile": compile_, "skipped": f"time budget ({args.budget_s:.0f} s)"}
                )
                continue
            try:
                r = train_once(args, sets, env, root, batch, compile_)
            except RuntimeError as exc:
                runs.append(
                    {
                        "batch": batch,
                        "compile": compile_,
                        "failed": str(exc).splitlines()[0],
                        "wall_s": time.time() - start - spent,
                    }
                )
                continue
            rate = r["images_per_s_steady"] or 0.0
            r["achieved_tflops"] = rate * per_image / 1e12
            r["mfu"] = rate * per_image / peak if peak else None
            log.info(
                "batch %d, compile %s: %.1f images/s, MFU %s",
                batch,
                compile_,
                rate,
                f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a",
            )
            runs.append(r)
    return {
        "device": args.device,
        "gpu": name,
        "bf16_peak_tflops": peak / 1e12 if peak else None,
        "torch": torch.__version__,
        "model": args.model,
        "size": list(args.size),
        "train_flops_per_image": per_image,
        "steps_per_run": args.steps,
        "runs": runs,
        "wall_s": time.time() - start,
    }


def format_table(r: dict[str, Any]) -> str:
    lines = [
        (
            f"{r['device']} ({r['gpu']}), torch {r['torch']}, {r['model']} model at {r['size'][0]}x{r['size'][1]}, "
            f"{r['train_flops_per_image'] / 1e9:.1f} training GFLOPs per image, bf16 peak "
            f"{r['bf16_peak_tflops'] or 'n/a'} TFLOPS"
        ),
        "",
        (
            "| compile | batch | images/s | MFU | s/step | data wait | of which H2D | of which expand | "
            "forward/backward | of which all-reduce | check + optimiser + EMA |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        if "images_per_s_steady" not in x:
            lines.append(
                f"| {x['compile']} | {x['batch']} | {x.get('skipped') or x.get('failed')} | | | | | | | | |"
            )
            continue
        pct = lambda v: f"{v:.0%}" if isinstance(v, (int, float)) else "n/a"
        lines.append(
            f"| {x['compile']} | {x['batch']} | {x['images_per_s_steady']:.1f} | {pct(x['mfu'])} | "
            f"{x['time_per_step_s']:.3f} | {pct(x['fraction_data'])} | {pct(x.get('fraction_h2d'))} | "
            f"{pct(x.get('fraction_expand'))} | {pct(x.get('fraction_forward_backward'))} | "
            f"{pct(x['fraction_allreduce'])} | {pct(x.get('fraction_check_optimizer_ema'))} |"
        )
    return "\n".join(lines)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, nargs=2, default=[256, 176], metavar=("H", "W"))
    parser.add_argument("--model", choices=("paper", "default"), default="paper")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--compile", nargs="+", choices=("never", "always"), default=["never", "always"])
    parser.add_argument(
        "--steps", type=int, default=12, help="training steps per run (the first is not timed)"
    )
    parser.add_argument(
        "--identities", type=int, default=64, help="synthetic training identities (4 views each)"
    )
    parser.add_argument("--loader-workers", type=int, default=4)
    parser.add_argument("--preprocess-workers", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip runs that would end past this")
