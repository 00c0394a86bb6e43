"""Pictures of a portrait dataset: a landmark contact sheet and a part-map sheet.

    python -m pipelines.portrait_sheets [--dataset synthetic_portrait] [--root DIR]
                                        [--out-dir docs/images] [--identities 6] [--views 6]

With ``--root`` the sheets show a dataset already on disk in the portrait layout;
without it a small copy of the configured synthetic dataset (``--identities``
identities, two thirds train, one third test) is generated into a temporary
folder first.  Either way the pictures are drawn from what the layout holds -
the JPEGs and the integer landmarks read back from the CSV by the layout's reader -
so they show exactly what the preprocess stage will read (datasets.sheets.portrait_sheet).  Writes
``<out-dir>/<dataset>_contact.png`` and ``<out-dir>/<dataset>_parts.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from datasets.sheets.portrait_sheet import landmark_sheet, parts_sheet, pick_part_cells, pick_portrait_rows
from datasets.sheets.pose_sheet import save_png
from datasets.synthetic.portrait_dataset import write_dataset
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args

PART_SIGMA = 1.0  # pixels at 64x64; the part-map width the preprocess stage is expected to use


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.portrait_sheets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", default="synthetic_portrait")
    parser.add_argument(
        "--root", default=None, help="a dataset in the portrait layout (default: generate one)"
    )
    parser.add_argument("--out-dir", default="docs/images")
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--views", type=int, default=6)
    add_config_args(parser)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "portrait_sheets")
    cfg = config_from_args(args)
    if args.dataset not in cfg.synthesize and args.root is None:
        print(f"portrait_sheets: {args.dataset!r} has no synthesize entry; pass --root", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            n_test = max(1, args.identities // 3)
            spec = dataclasses.replace(
                cfg.synthesize[args.dataset],
                train_identities=args.identities - n_test,
                test_identities=n_test,
                views_per_identity=max(args.views, 2),
            )
            root, prefix = Path(tmp) / "portraits", spec.file_prefix
            write_dataset(spec, root)
        else:
            root, prefix = Path(args.root), "portrait"
        rows = pick_portrait_rows(root, prefix, args.identities, args.views)
        contact = save_png(out_dir / f"{args.dataset}_contact.png", landmark_sheet(rows, scale=3))
        parts = save_png(
            out_dir / f"{args.dataset}_parts.png", parts_sheet(pick_part_cells(rows), PART_SIGMA, scale=3)
        )
    print(f"portrait_sheets: {contact}\nportrait_sheets: {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
