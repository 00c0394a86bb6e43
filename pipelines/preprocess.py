"""Stage ``preprocess``: raw dataset (field layout) -> validated WebDataset shards.

    python -m pipelines.preprocess --dataset synthetic_fashion [--root DIR] [--out DIR|URL] [--workers N] [--set k=v]

Writes ``OUT/{train,test}-NNNNNN.tar``, ``OUT/manifest.json``, ``OUT/rejects.csv``,
the counts as DVC metrics (``metrics/preprocess/<dataset>.json``) and a contact
sheet (``reports/figures/<dataset>-shards.png``).  OUT is a folder or a URL
(``s3://bucket/prefix``, ``gs://…``, ``file://…``).  A local output folder is
built under a staging name and swapped in at the end, so an interrupted run
leaves the previous output intact; on an object store the old manifest is
removed first and the new one written after every shard.  ``--workers N``
validates and writes the shards on N Ray workers (local Ray on 127.0.0.1, or
``RAY_ADDRESS``); the output is the same bytes for any N.  Exit status: 0 ok,
1 too much rejected or a data or storage error, 2 bad config / unknown dataset
/ missing raw files.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from datasets.files import atomic_write_bytes, staged_dir
from datasets.raw.layout import LayoutError
from datasets.shards.build import RejectFractionError, preprocess
from datasets.storage import StorageError, is_url, join, read_bytes, safe_url
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args


def _summary(manifest: dict, out: str, figure: Path | None, metrics: Path | None) -> str:
    lines = [f"preprocess {manifest['dataset']}: {len(manifest['shards'])} shards in {safe_url(out)}"]
    for split, c in manifest["splits"].items():
        lines.append(
            f"  {split:5s} images {c['images_written']}/{c['images_in']} written ({c['images_rejected']} rejected), "
            f"pairs {c['pairs_written']}/{c['pairs_in']} ({c['pairs_rejected']} rejected), "
            f"rows rejected {c['rows_rejected']}, faces missing {c['faces_missing']}, samples {c['samples']}"
        )
    leaks = manifest["identities_in_both_splits"]
    if leaks["count"]:
        lines.append(
            f"  warning: {leaks['count']} identities have images in both splits, "
            f"e.g. {', '.join(leaks['examples'][:3])}"
        )
    lines.append(
        f"  manifest: {safe_url(join(out, 'manifest.json'))}   rejects: {safe_url(join(out, 'rejects.csv'))}"
    )
    if metrics:
        lines.append(f"  metrics: {metrics}")
    if figure:
        lines.append(f"  contact sheet: {figure}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.preprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", required=True, help="a key of params.yaml datasets")
    parser.add_argument("--root", help="raw dataset folder (default: datasets.NAME.root)")
    parser.add_argument("--out", help="output folder or URL (default: datasets.NAME.shards)")
    parser.add_argument(
        "--workers", type=int, help="Ray workers (default: preprocess.workers; 0 = in this process, no Ray)"
    )
    parser.add_argument("--metrics", help="counts as JSON (default: metrics/preprocess/NAME.json)")
    parser.add_argument("--figure", help="contact sheet PNG (default: reports/figures/NAME-shards.png)")
    parser.add_argument("--no-figure", action="store_true", help="skip the contact sheet")
    parser.add_argument(
        "--receipt",
        help="with a URL output: local folder for copies of manifest.json and "
        "rejects.csv plus location.txt (default: data/shards/NAME), what DVC tracks",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(parser)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "preprocess")
    cfg = config_from_args(args)
    spec = dataset_from_args(cfg, args.dataset)
    if args.root:
        spec = replace(spec, root=args.root)
    out = args.out or spec.shards
    workers = cfg.preprocess.workers if args.workers is None else args.workers
    if workers < 0:
        print(f"preprocess: --workers must be >= 0, got {workers}", file=sys.stderr)
        return 2
    metrics = Path(args.metrics or f"metrics/preprocess/{args.dataset}.json")
    figure = None if args.no_figure else Path(args.figure or f"reports/figures/{args.dataset}-shards.png")
    try:
        manifest = preprocess(
            args.dataset,
            spec,
            cfg.preprocess,
            out,
            figure,
            metrics,
            show_progress=not args.quiet,
            workers=workers,
        )
    except LayoutError as exc:
        print(f"preprocess: {exc}", file=sys.stderr)
        return 2
    except (RejectFractionError, StorageError) as exc:
        print(f"preprocess: {exc}", file=sys.stderr)
        return 1
    if is_url(out):
        receipt = Path(args.receipt or f"data/shards/{args.dataset}")
        write_receipt(out, receipt)
        print(f"  receipt: {receipt}/ (manifest.json, rejects.csv, location.txt)")
    print(_summary(manifest, out, figure, metrics))
    return 0


def write_receipt(url: str, folder: Path) -> None:
    """Copy the bucket's manifest and rejects into a local folder, swapped in whole.

    The manifest names every shard with its sha256, so this folder is a content hash of the
    remote dataset: DVC tracks it as the stage's output (an object store URL is not a DVC out)
    and the stages after it rerun exactly when the shards change.
    """
    with staged_dir(folder) as tmp:
        tmp.mkdir(parents=True)
        for name in ("manifest.json", "rejects.csv"):
            atomic_write_bytes(tmp / name, read_bytes(join(url, name)))
        atomic_write_bytes(tmp / "location.txt", (safe_url(url) + "\n").encode())


if __name__ == "__main__":
    raise SystemExit(main())
