"""The paper's ablation on the synthetic data: each variant trained and evaluated on one budget.

    python -m pipelines.ablation run --variant attn     # train runs/ablation-attn, evaluate it
    python -m pipelines.ablation table                  # metrics/ablation.json + reports/ablation.md

Variants (model.variant): ``baseline`` (no warping), ``attn`` (attention only), ``flow`` (flow
only), ``no_face`` (both, no face term), ``full``.  Every variant gets the same
``evaluate.ablation.total_images``, seed and ``overrides``; training runs in-process
(``--workers 0``) so the budget means the same on any machine.  DVC runs one ``ablation_run``
stage per variant (``foreach``) and then ``ablation``.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args

log = logging.getLogger("ablation")
METRICS_DIR = Path("metrics/ablation")


def run_name(variant: str) -> str:
    return f"ablation-{variant}"


def run_variant(args: argparse.Namespace, cfg) -> int:
    acfg = cfg.evaluate.ablation
    if args.variant not in acfg.variants:
        log.error("%r is not in evaluate.ablation.variants (%s)", args.variant, ", ".join(acfg.variants))
        return 2
    common = ["--params", args.params, "--log-level", args.log_level]
    common += [x for o in args.overrides for x in ("--set", o)]
    sets = [f"model.variant={args.variant}", f"train.total_images={acfg.total_images}", f"train.seed={acfg.seed}",
            *acfg.overrides]
    train = [sys.executable, "-m", "pipelines.train", "--dataset", acfg.dataset, "--workers", "0",
             "--run-name", run_name(args.variant), *common] + [x for s in sets for x in ("--set", s)]
    log.info("+ %s", " ".join(train[1:]))
    done = subprocess.run(train)
    if done.returncode != 0:
        return done.returncode
    evaluate = [sys.executable, "-m", "pipelines.evaluate", "--dataset", acfg.dataset,
                "--run-name", run_name(args.variant), *common,
                "--checkpoint", f"{cfg.train.storage_path}/{run_name(args.variant)}/checkpoints",
                "--metrics", str(METRICS_DIR / f"{args.variant}.json"), "--plots", f"plots/ablation/{args.variant}",
                "--set", f"evaluate.images_dir=data/eval/ablation-{args.variant}"]
    log.info("+ %s", " ".join(evaluate[1:]))
    return subprocess.run(evaluate).returncode


def table(cfg) -> int:
    acfg = cfg.evaluate.ablation
    rows: dict[str, dict] = {}
    missing = [v for v in acfg.variants if not (METRICS_DIR / f"{v}.protocol.json").is_file()]
    if missing:
        log.error("no metrics for %s; run `python -m pipelines.ablation run --variant V` (or dvc repro ablation)",
                  ", ".join(missing))
        return 2
    # Each variant's evaluation record (scores with the protocol they were computed under).
    docs = {v: json.loads((METRICS_DIR / f"{v}.protocol.json").read_text()) for v in acfg.variants}
    protocols = {d["protocol_sha256"] for d in docs.values()}
    if len(protocols) != 1:
        log.error("the variants were evaluated under different protocols; re-run them")
        return 2
    first = docs[acfg.variants[0]]
    names = first["metric_names"]
    keys = ["ssim", "psnr", names["fd"], names.get("kid", ""), names["lpd"]] + sorted(
        k for k in first["model"] if k.startswith("masked_") and not k.endswith(("_ci95_low", "_ci95_high")))
    # A score the evaluation could not compute (the Fréchet distance on too few images) is left out.
    keys = [k for k in keys if k and all(k in d["model"] for d in docs.values())]
    for v, d in docs.items():
        rows[v] = {k: d["model"][k] for k in keys}
    baselines = {b: {k: first["baselines"][b].get(k, float("nan")) for k in keys} for b in first["baselines"]}
    out = {
        "dataset": acfg.dataset,
        "total_images": acfg.total_images,
        "seed": acfg.seed,
        "overrides": list(acfg.overrides),
        "protocol_sha256": protocols.pop(),
        "variants": rows,
        "baselines": baselines,
    }
    METRICS_DIR.parent.mkdir(parents=True, exist_ok=True)
    Path("metrics/ablation.json").write_text(json.dumps(out, indent=2) + "\n")

    from pipelines.registry.promotion import lower_is_better

    arrows = {k: "↓" if lower_is_better(k) else "↑" for k in keys}
    best = {k: (min if lower_is_better(k) else max)(rows[v][k] for v in rows) for k in keys}
    lines = [f"Ablation on `{acfg.dataset}`, {acfg.total_images} training images per variant "
             f"(seed {acfg.seed}{', ' + ', '.join(acfg.overrides) if acfg.overrides else ''}); "
             f"{first['protocol']['pairs']} test pairs, protocol `{out['protocol_sha256'][:12]}`.", "",
             "| variant | " + " | ".join(f"{k} {arrows[k]}" for k in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for v, r in rows.items():
        lines.append(f"| {v} | " + " | ".join(
            (f"**{r[k]:.4f}**" if r[k] == best[k] else f"{r[k]:.4f}") for k in keys) + " |")
    for b, r in baselines.items():
        lines.append(f"| *{b}* | " + " | ".join(f"*{r[k]:.4f}*" for k in keys) + " |")
    report = Path("reports/ablation.md")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.ablation", description=__doc__.split("\n\n")[0])
    add_log_level_arg(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate one variant")
    run.add_argument("--variant", required=True)
    add_config_args(run)
    add_log_level_arg(run, subcommand=True)
    tab = sub.add_parser("table", help="collect the variants' scores into metrics/ablation.json and a table")
    add_config_args(tab)
    add_log_level_arg(tab, subcommand=True)
    args = ap.parse_args(argv)
    setup_logging(args.log_level, "ablation")
    cfg = config_from_args(args)
    return run_variant(args, cfg) if args.command == "run" else table(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
