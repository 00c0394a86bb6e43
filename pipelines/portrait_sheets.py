"""Pictures of a portrait dataset: a landmark contact sheet and a part-map sheet.

    python -m pipelines.portrait_sheets [--dataset synthetic_portrait] [--root DIR]
                                        [--out-dir docs/images] [--identities 6] [--views 6]

With ``--root`` the sheets show a dataset already on disk in the portrait layout;
without it a small copy of the configured synthetic dataset (``--identities``
identities, two thirds train, one third test) is generated into a temporary
folder first.  Either way the pictures are drawn from what the layout holds -
the JPEGs and the integer landmarks read back from the CSV with pandas - so they
show exactly what the preprocess stage will read.  Writes
``<out-dir>/<dataset>_contact.png`` and ``<out-dir>/<dataset>_parts.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from datasets.pose.landmarks import decode_row
from datasets.raw.layout import identity_of
from datasets.sheets.pose_sheet import save_png
from datasets.sheets.portrait_sheet import landmark_sheet, parts_sheet
from pipelines.config.params import add_config_args, config_from_args

PART_SIGMA = 1.0  # pixels at 64x64; the part-map width the preprocess stage is expected to use


def read_split(root: Path, prefix: str, split: str) -> dict[str, list[tuple[np.ndarray, np.ndarray, str]]]:
    """Identity -> [(image, landmarks, caption)] for one split of a portrait-layout folder."""
    from datasets.raw.layout import get_layout

    layout = get_layout("portrait")
    frame = pd.read_csv(root / f"{prefix}-landmarks-{split}.csv", sep=":")
    groups: dict[str, list] = {}
    for name, ys, xs in zip(frame["name"], frame["landmarks_y"], frame["landmarks_x"]):
        image = np.asarray(Image.open(root / split / name).convert("RGB"))
        lm = decode_row(ys, xs)
        hidden = int((lm[:, 0] < 0).sum())
        caption = f"{split} {Path(name).stem[-10:]}" + (f" ({hidden} hidden)" if hidden else "")
        groups.setdefault(identity_of(name, layout), []).append((image, lm, caption))
    return groups


def pick_rows(root: Path, prefix: str, identities: int, views: int) -> list[list]:
    n_test = max(1, identities // 3)
    rows = []
    for split, count in (("train", identities - n_test), ("test", n_test)):
        groups = read_split(root, prefix, split)
        rows += [cells[:views] for cells in list(groups.values())[:count]]
    return rows


def pick_parts(rows: list[list], count: int = 5) -> list:
    """A varied handful for the part-map sheet: the most different expressions/poses first."""
    cells = [c for row in rows for c in row]
    # Spread by lip gap and hidden-point count so open mouths, closed eyes and yaw all show.
    def key(cell):
        lm = cell[1]
        gap = lm[66, 1] - lm[62, 1] if lm[66, 1] >= 0 and lm[62, 1] >= 0 else 0
        eye = lm[41, 1] - lm[37, 1] if lm[41, 1] >= 0 and lm[37, 1] >= 0 else 0
        return (gap, -eye, (lm[:, 0] < 0).sum())
    ranked = sorted(cells, key=key)
    idx = np.linspace(0, len(ranked) - 1, count).round().astype(int)
    return [ranked[i] for i in idx]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.portrait_sheets", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="synthetic_portrait")
    parser.add_argument("--root", default=None, help="a dataset in the portrait layout (default: generate one)")
    parser.add_argument("--out-dir", default="docs/images")
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--views", type=int, default=6)
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.dataset not in cfg.synthesize and args.root is None:
        print(f"portrait_sheets: {args.dataset!r} has no synthesize entry; pass --root", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            from datasets.synthetic.portrait import write_dataset

            n_test = max(1, args.identities // 3)
            spec = dataclasses.replace(cfg.synthesize[args.dataset], train_identities=args.identities - n_test,
                                       test_identities=n_test, views_per_identity=max(args.views, 2))
            root, prefix = Path(tmp) / "portraits", spec.file_prefix
            write_dataset(spec, root)
        else:
            root, prefix = Path(args.root), "portrait"
        rows = pick_rows(root, prefix, args.identities, args.views)
        contact = save_png(out_dir / f"{args.dataset}_contact.png", landmark_sheet(rows, scale=3))
        parts = save_png(out_dir / f"{args.dataset}_parts.png", parts_sheet(pick_parts(rows), PART_SIGMA, scale=3))
    print(f"portrait_sheets: {contact}\nportrait_sheets: {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
