"""Stage ``preprocess``: raw dataset (field layout) -> validated WebDataset shards.

    python -m pipelines.preprocess --dataset synthetic_fashion [--root DIR] [--out DIR] [--set k=v]

Writes ``OUT/{train,test}-NNNNNN.tar``, ``OUT/manifest.json``, ``OUT/rejects.csv``,
the counts as DVC metrics (``metrics/preprocess/<dataset>.json``) and a contact
sheet (``reports/figures/<dataset>-shards.png``).  The whole output folder is
built under a staging name and swapped in at the end, so an interrupted run
leaves the previous output intact.  Exit status: 0 ok, 1 too much rejected or
a data error, 2 bad config / unknown dataset / missing raw files.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from datasets.raw.layout import LayoutError
from datasets.shards.build import RejectFractionError, preprocess
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args


def _summary(manifest: dict, out: Path, figure: Path | None, metrics: Path | None) -> str:
    lines = [f"preprocess {manifest['dataset']}: {len(manifest['shards'])} shards in {out}/"]
    for split, c in manifest["splits"].items():
        lines.append(
            f"  {split:5s} images {c['images_written']}/{c['images_in']} written ({c['images_rejected']} rejected), "
            f"pairs {c['pairs_written']}/{c['pairs_in']} ({c['pairs_rejected']} rejected), "
            f"rows rejected {c['rows_rejected']}, faces missing {c['faces_missing']}, samples {c['samples']}")
    leaks = manifest["identities_in_both_splits"]
    if leaks["count"]:
        lines.append(f"  warning: {leaks['count']} identities have images in both splits, "
                     f"e.g. {', '.join(leaks['examples'][:3])}")
    lines.append(f"  manifest: {out / 'manifest.json'}   rejects: {out / 'rejects.csv'}")
    if metrics:
        lines.append(f"  metrics: {metrics}")
    if figure:
        lines.append(f"  contact sheet: {figure}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="a key of params.yaml datasets")
    parser.add_argument("--root", help="raw dataset folder (default: datasets.NAME.root)")
    parser.add_argument("--out", help="output folder (default: datasets.NAME.shards)")
    parser.add_argument("--metrics", help="counts as JSON (default: metrics/preprocess/NAME.json)")
    parser.add_argument("--figure", help="contact sheet PNG (default: reports/figures/NAME-shards.png)")
    parser.add_argument("--no-figure", action="store_true", help="skip the contact sheet")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(parser)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "preprocess")
    cfg = config_from_args(args)
    spec = dataset_from_args(cfg, args.dataset)
    if args.root:
        spec = replace(spec, root=args.root)
    out = Path(args.out or spec.shards)
    metrics = Path(args.metrics or f"metrics/preprocess/{args.dataset}.json")
    figure = None if args.no_figure else Path(args.figure or f"reports/figures/{args.dataset}-shards.png")
    try:
        manifest = preprocess(args.dataset, spec, cfg.preprocess, out, figure, metrics, show_progress=not args.quiet)
    except LayoutError as exc:
        print(f"preprocess: {exc}", file=sys.stderr)
        return 2
    except RejectFractionError as exc:
        print(f"preprocess: {exc}", file=sys.stderr)
        return 1
    print(_summary(manifest, out, figure, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
