"""The paper's ablation on the synthetic data: each variant trained and evaluated on one budget.

    python -m pipelines.ablation run --variant attn [--seed 0]   # train runs/ablation-attn-s0, evaluate it
    python -m pipelines.ablation table                           # metrics/ablation.json + reports/ablation.md

Variants (model.variant): ``baseline`` (no warping), ``attn`` (attention only), ``flow`` (flow
only), ``no_face`` (both, no face term), ``full``.  Every variant gets the same
training params, those of ablation/params.yaml (read over params.yaml, a section of it replacing
params.yaml's whole), once per seed of ``ablation.seeds``; only ``model.variant`` and
``train.seed`` differ between runs.  The table
gives each score's mean over the seeds, and for each of the paper's claims (full best, each branch
better than none, the face term helps) whether it holds beyond the seeds' noise.  DVC runs one
``ablation_run`` stage per variant and seed (``matrix``) and then ``ablation``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from datasets.files import atomic_write_bytes
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args
from pipelines.evaluation.metric_table import MASKED_PREFIX, arrow, is_statistic, lower_is_better
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import EvaluationRecord, RecordError, protocol_path

log = logging.getLogger("ablation")
METRICS_DIR = Path("metrics/ablation")
ABLATION_PARAMS = ("params.yaml", "ablation/params.yaml")


def run_name(variant: str, seed: int) -> str:
    return f"ablation-{variant}-s{seed}"


def run_variant(args: argparse.Namespace, cfg) -> int:
    acfg = cfg.ablation
    if args.variant not in acfg.variants:
        log.error(
            "%r is not in ablation.variants (%s: %s)", args.variant, args.params[-1], ", ".join(acfg.variants)
        )
        return 2
    seeds = [args.seed] if args.seed is not None else list(acfg.seeds)
    if any(s not in acfg.seeds for s in seeds):
        log.error(
            "seed %s is not in ablation.seeds (%s: %s)",
            args.seed,
            args.params[-1],
            ", ".join(map(str, acfg.seeds)),
        )
        return 2
    for seed in seeds:
        code = _run_one(args, cfg, args.variant, seed)
        if code != 0:
            return code
    return 0


def _run_one(args: argparse.Namespace, cfg, variant: str, seed: int) -> int:
    name = run_name(variant, seed)
    common = [x for p in args.params for x in ("--params", p)] + ["--log-level", args.log_level]
    common += [x for o in args.overrides for x in ("--set", o)]
    sets = [f"model.variant={variant}", f"train.seed={seed}"]
    train = [sys.executable, "-m", "pipelines.train", "--run-name", name, *common] + [
        x for s in sets for x in ("--set", s)
    ]
    log.info("+ %s", " ".join(train[1:]))
    done = subprocess.run(train, check=False)
    if done.returncode != 0:
        return done.returncode
    evaluate = [
        sys.executable,
        "-m",
        "pipelines.evaluate",
        "--run-name",
        name,
        *common,
        "--checkpoint",
        RunFolder.of(name, cfg.train.storage_path).checkpoints,
        "--metrics",
        str(metrics_path(variant, seed)),
        "--plots",
        f"plots/ablation/{variant}-s{seed}",
        "--set",
        f"evaluate.images_dir=data/eval/{name}",
    ]
    log.info("+ %s", " ".join(evaluate[1:]))
    return subprocess.run(evaluate, check=False).returncode


# The paper's claims (Table 2 of the paper: the full model is best; each warping branch alone
# beats no warping; the face term helps), as (better, worse) pairs of variants.
CLAIMS = (("full", "attn"), ("full", "flow"), ("full", "no_face"), ("attn", "baseline"), ("flow", "baseline"))
# What the verdicts are judged on: the field's image score, the perceptual distance and, on
# synthetic figures, whether the source's clothes arrive (scores a variant may lack are skipped).
VERDICT_KEYS = ("ssim", "lpd", "appearance_de00")
CORRESPONDENCE_KEYS = ("flow_epe", "attn_epe_s8", "branch_choice_s8", "appearance_de00")


def verdict(better: list[float], worse: list[float], lower_better: bool) -> str:
    """``beyond seed noise``: every seed of ``better`` beats every seed of ``worse``; ``on average``:
    the means are ordered but the seeds overlap; ``reversed``: the means are not ordered."""
    sign = -1.0 if lower_better else 1.0
    b, w = [sign * v for v in better], [sign * v for v in worse]
    if min(b) > max(w):
        return "beyond seed noise"
    if sum(b) / len(b) > sum(w) / len(w):
        return "on average"
    return "reversed"


def metrics_path(variant: str, seed: int) -> Path:
    """The scores of one variant and seed; its evaluation record is beside it (protocol_path)."""
    return METRICS_DIR / f"{variant}-s{seed}.json"


def _records(acfg) -> tuple[dict[tuple[str, int], EvaluationRecord], list[str]]:
    want = [(v, s) for v in acfg.variants for s in acfg.seeds]
    missing = [f"{v} seed {s}" for v, s in want if not protocol_path(metrics_path(v, s)).is_file()]
    docs = (
        {} if missing else {(v, s): EvaluationRecord.load(protocol_path(metrics_path(v, s))) for v, s in want}
    )
    return docs, missing


def _checked_records(acfg) -> dict[tuple[str, int], EvaluationRecord] | None:
    """Each run's evaluation record (scores with the protocol they were computed under), all under
    one protocol; None (the reason logged) when one is missing, unreadable or another protocol's."""
    try:
        docs, missing = _records(acfg)
    except RecordError as exc:
        log.error("%s", exc)
        return None
    if missing:
        log.error(
            "no metrics for %s; run `python -m pipelines.ablation run --variant V [--seed S]` (or make "
            "ablation)",
            ", ".join(missing),
        )
        return None
    if len({d.protocol_sha256 for d in docs.values()}) != 1:
        log.error("the variants were evaluated under different protocols; re-run them")
        return None
    return docs


def _score_keys(docs: dict[tuple[str, int], EvaluationRecord]) -> list[str]:
    """The table's columns: the image scores every run has, then the correspondence scores any has."""
    first = next(iter(docs.values()))
    names = first.metric_names
    keys = ["ssim", "psnr", names["fd"], names.get("kid", ""), names["lpd"]] + sorted(
        k for k in first.model if k.startswith(MASKED_PREFIX) and not is_statistic(k)
    )
    # A score the evaluation could not compute (the Fréchet distance on too few images) is left out;
    # a correspondence score exists only for the variants with that branch (no flow: no flow_epe).
    keys = [k for k in keys if k and all(k in d.model for d in docs.values())]
    keys += [k for k in CORRESPONDENCE_KEYS if k not in keys and any(k in d.model for d in docs.values())]
    return keys


def _per_seed(
    docs: dict[tuple[str, int], EvaluationRecord], acfg, keys: list[str]
) -> dict[str, dict[str, list[float]]]:
    """variant -> score -> each seed's value (the scores every seed of the variant has)."""
    return {
        v: {
            k: [docs[(v, s)].model[k] for s in acfg.seeds]
            for k in keys
            if all(k in docs[(v, s)].model for s in acfg.seeds)
        }
        for v in acfg.variants
    }


def _claims(per_seed: dict[str, dict[str, list[float]]], judged: list[str]) -> list[dict[str, str]]:
    """Each of the paper's claims on each judged score both variants have, with its verdict."""
    return [
        {
            "better": a,
            "worse": b,
            "metric": k,
            "verdict": verdict(per_seed[a][k], per_seed[b][k], lower_is_better(k)),
        }
        for a, b in CLAIMS
        if a in per_seed and b in per_seed
        for k in judged
        if k in per_seed[a] and k in per_seed[b]
    ]


def _scores_table(out: dict[str, Any], keys: list[str]) -> list[str]:
    """The Markdown rows of each variant's means (the best in bold) and of the baselines."""
    rows, per_seed = out["variants"], out["per_seed"]
    arrows = {k: arrow(k) for k in keys}
    best = {k: (min if lower_is_better(k) else max)(rows[v][k] for v in rows if k in rows[v]) for k in keys}

    def cell(v: str, k: str) -> str:
        if k not in rows[v]:
            return "–"
        text = f"{rows[v][k]:.4f}" + (
            f" ({', '.join(f'{x:.4f}' for x in per_seed[v][k])})" if len(out["seeds"]) > 1 else ""
        )
        return f"**{text}**" if rows[v][k] == best[k] else text

    lines = [
        "| variant | " + " | ".join(f"{k} {arrows[k]}" for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for v in rows:
        lines.append(f"| {v} | " + " | ".join(cell(v, k) for k in keys) + " |")
    for b, r in out["baselines"].items():
        lines.append(
            f"| *{b}* | "
            + " | ".join(f"*{r[k]:.4f}*" if k in r and r[k] == r[k] else "–" for k in keys)
            + " |"
        )
    return lines


def _claims_table(claims: list[dict[str, str]], judged: list[str]) -> list[str]:
    """The Markdown rows of the paper's claims, one column per judged score."""
    lines = [
        "| claim | " + " | ".join(judged) + " |",
        "|---|" + "---|" * len(judged),
    ]
    for a, b in CLAIMS:
        got = {c["metric"]: c["verdict"] for c in claims if c["better"] == a and c["worse"] == b}
        if got:
            lines.append(f"| {a} better than {b} | " + " | ".join(got.get(k, "–") for k in judged) + " |")
    return lines


def _report_lines(cfg, out: dict[str, Any], keys: list[str], judged: list[str], pairs: int) -> list[str]:
    """reports/ablation.md: what was run, the scores table and the claims table."""
    seeds = ", ".join(map(str, out["seeds"]))
    return [
        (
            f"Ablation on `{cfg.train.dataset}`, {cfg.train.total_images} training images per variant and seed "
            f"(seeds {seeds}; profile {cfg.profile}, ablation/params.yaml); "
            f"{pairs} test pairs, protocol `{out['protocol_sha256'][:12]}`. "
            "Each cell: the mean over the seeds (each seed's score)."
        ),
        "",
        *_scores_table(out, keys),
        "",
        (
            "The paper's ordering, per score (beyond seed noise: every seed of the first variant beats "
            "every seed of the second):"
        ),
        "",
        *_claims_table(out["claims"], judged),
    ]


def table(cfg) -> int:
    acfg = cfg.ablation
    docs = _checked_records(acfg)
    if docs is None:
        return 2
    first = next(iter(docs.values()))
    keys = _score_keys(docs)
    per_seed = _per_seed(docs, acfg, keys)
    judged = [first.metric_names["lpd"] if k == "lpd" else k for k in VERDICT_KEYS]
    judged = [k for k in judged if k in keys]
    out = {
        "dataset": cfg.train.dataset,
        "total_images": cfg.train.total_images,
        "seeds": list(acfg.seeds),
        "profile": cfg.profile,
        "protocol_sha256": first.protocol_sha256,
        # means over the seeds
        "variants": {v: {k: sum(vals) / len(vals) for k, vals in per_seed[v].items()} for v in acfg.variants},
        "per_seed": per_seed,
        "baselines": {
            b: {k: first.baselines[b][k] for k in keys if k in first.baselines[b]} for b in first.baselines
        },
        "claims": _claims(per_seed, judged),
    }
    METRICS_DIR.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path("metrics/ablation.json"), (json.dumps(out, indent=2) + "\n").encode())
    lines = _report_lines(cfg, out, keys, judged, first.protocol["pairs"])
    report = Path("reports/ablation.md")
    report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(report, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.ablation", description=__doc__.split("\n\n")[0])
    add_log_level_arg(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate one variant (each seed, or --seed)")
    run.add_argument("--variant", required=True)
    run.add_argument("--seed", type=int, help="one seed of ablation.seeds (default: each in turn)")
    add_config_args(run, default=ABLATION_PARAMS)
    add_log_level_arg(run, subcommand=True)
    tab = sub.add_parser("table", help="collect the variants' scores into metrics/ablation.json and a table")
    add_config_args(tab, default=ABLATION_PARAMS)
    add_log_level_arg(tab, subcommand=True)
    args = ap.parse_args(argv)
    setup_logging(args.log_level, "ablation")
    cfg = config_from_args(args)
    return run_variant(args, cfg) if args.command == "run" else table(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
