"""Stage ``synthesize``: render a synthetic dataset in the field's raw layout.

    python -m pipelines.synthesize --dataset synthetic_fashion [--out DIR] [--params FILE] [--set …]

Writes ``datasets.<name>.root`` (or ``--out``) atomically, prints the speed and where
the outputs are, and draws a contact sheet of identities × views with their
keypoints to ``reports/figures/<name>-contact.png``.  Unknown datasets, datasets
without a ``synthesize`` entry and bad config exit 2 with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from datasets.raw.layout import CSV_PREFIXES
from datasets.sheets.portrait_sheet import landmark_sheet, pick_portrait_rows
from datasets.sheets.pose_sheet import pick_pose_rows, pose_sheet, save_png
from datasets.synthetic.data_generators import GENERATORS
from datasets.synthetic.synthesis_summary import total_images
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args


def _fail(message: str) -> None:
    print(f"synthesize: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.synthesize", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", required=True, help="a synthetic dataset named in params.yaml datasets")
    parser.add_argument("--out", default=None, help="output folder (default: the dataset's root)")
    parser.add_argument(
        "--contact", default=None, help="contact sheet PNG (default: reports/figures/<dataset>-contact.png)"
    )
    parser.add_argument("--no-contact", action="store_true", help="skip the contact sheet")
    parser.add_argument("--contact-identities", type=int, default=6, help="identities shown (default 6)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(parser)
    add_log_level_arg(parser)
    return parser


def write_contact_sheet(root: Path, prefix: str, layout: str, out: Path, identities: int) -> Path:
    """Identities × views of the written dataset (train first, then test), read back from its JPEGs
    and CSVs: skeletons for a body layout, landmarks for the portrait one."""
    if layout == "portrait":
        sheet = landmark_sheet(pick_portrait_rows(root, prefix, identities, views=6), scale=3)
    else:
        sheet = pose_sheet(pick_pose_rows(root, prefix, layout, identities), scale=2)
    return save_png(out, sheet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "synthesize")
    cfg = config_from_args(args)
    name = args.dataset
    if name not in cfg.datasets:
        _fail(f"unknown dataset {name!r}; params.yaml datasets: {', '.join(sorted(cfg.datasets))}")
    if name not in cfg.synthesize:
        _fail(
            f"dataset {name!r} has no synthesize entry in {args.params} (it is read from its root, "
            f"not generated); synthetic datasets: {', '.join(sorted(cfg.synthesize)) or 'none'}"
        )
    spec, dataset = cfg.synthesize[name], cfg.dataset(name)
    if spec.generator not in GENERATORS:
        _fail(
            f"synthesize.{name}.generator {spec.generator!r} is not available; known: "
            f"{', '.join(sorted(GENERATORS))}"
        )
    prefixes = CSV_PREFIXES.get(dataset.layout)
    if prefixes is not None and spec.file_prefix not in prefixes:
        _fail(
            f"synthesize.{name}.file_prefix {spec.file_prefix!r} does not match layout "
            f"{dataset.layout!r} (expected one of {', '.join(prefixes)})"
        )
    if (spec.height, spec.width) != tuple(dataset.source_size):
        print(
            f"synthesize: note: images are {spec.height}x{spec.width} but datasets.{name}.source_size is "
            f"{dataset.source_size[0]}x{dataset.source_size[1]}; preprocess will rescale",
            file=sys.stderr,
        )
    gen = GENERATORS[spec.generator]
    root = Path(args.out or dataset.root)
    bar = tqdm(
        total=total_images(spec),
        unit="img",
        desc=f"synthesize {name}",
        disable=args.no_progress or None,
        file=sys.stderr,
    )
    try:
        summary = gen.write(spec, root, lambda _sample: bar.update(1))
    except FileExistsError as exc:
        _fail(str(exc))
    finally:
        bar.close()
    print(f"synthesize {name}: {summary.describe(gen.noun)}")
    print(f"synthesize {name}: dataset -> {root}")
    if not args.no_contact:
        out = Path(args.contact or f"reports/figures/{name}-contact.png")
        write_contact_sheet(root, spec.file_prefix, dataset.layout, out, args.contact_identities)
        print(f"synthesize {name}: contact sheet -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
