"""Convert a real face set with 68-point landmarks into the portrait layout (docs/portrait.md).

    python -m pipelines.convert_portraits --images DIR (--pts | --csv FILE) --out ROOT
        [--size 64 64] [--crop face|none] [--margin 0.35] [--pts-origin 1]
        [--identity stem|dir] [--test-fraction 0.1] [--seed 0]

Inputs (68 points in the iBUG order every 68-point tool uses):

* ``--pts``: one ``NAME.pts`` next to each image ``NAME.jpg|png`` - the 300-W / iBUG
  format (``version: 1``, ``n_points: 68``, ``{``, 68 lines ``x y``, ``}``).  Those
  files count pixels from 1 (MATLAB style); ``--pts-origin 0`` reads 0-based files.
* ``--csv FILE``: one row per image with columns ``name`` (path relative to
  ``--images``), ``x0`` … ``x67`` and ``y0`` … ``y67`` (0-based pixels); an empty,
  NaN or negative coordinate marks a missing point.

Each image is cropped to a square around its landmarks (``--crop face``: the
landmarks' box grown by ``--margin`` of its side on every side, padded with the
edge colour where it leaves the image) or kept whole (``--crop none``), resized to
``--size`` H W, and written as ``ROOT/{train,test}/<identity>_<stem>.jpg`` with its
landmarks mapped into that frame (pixel centres preserved; points outside -> -1).
The identity of an image is its file stem up to the last ``_`` (``--identity stem``,
e.g. ``person12_0003``) or its folder's name (``--identity dir``); identities are
split train/test by a seeded shuffle (never both), and the pair CSVs hold all
ordered pairs of distinct images of an identity.  ``ROOT/portrait-names.csv`` maps
each written name back to its source file.  Problems (no landmark file, a wrong
point count, an unreadable image) are listed and skipped; the exit status is 2
when nothing could be converted or an input is missing.  The folder is written
under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datasets.raw.portrait_import import ConvertError, collect, convert
from pipelines.config.logs import add_log_level_arg, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.convert_portraits", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--images", required=True, help="folder of face images (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pts", action="store_true", help="read NAME.pts next to each image")
    source.add_argument("--csv", help="CSV with name, x0..x67, y0..y67")
    parser.add_argument("--out", required=True, help="output folder in the portrait layout")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--crop", choices=("face", "none"), default="face")
    parser.add_argument(
        "--margin", type=float, default=0.35, help="face crop margin, fraction of the box side"
    )
    parser.add_argument(
        "--pts-origin", type=int, choices=(0, 1), default=1, help=".pts pixel origin (300-W: 1)"
    )
    parser.add_argument("--identity", choices=("stem", "dir"), default="stem")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    add_log_level_arg(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "convert_portraits")
    images = Path(args.images)
    if not images.is_dir():
        print(f"convert_portraits: {images}: image folder not found", file=sys.stderr)
        return 2
    try:
        items, problems = collect(
            images, args.pts, Path(args.csv) if args.csv else None, args.identity, args.pts_origin
        )
    except (ConvertError, FileNotFoundError) as exc:
        print(f"convert_portraits: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"convert_portraits: skipped {line}", file=sys.stderr)
    if not items:
        print(f"convert_portraits: nothing to convert in {images}", file=sys.stderr)
        return 2
    counts = convert(
        items, Path(args.out), tuple(args.size), args.crop, args.margin, args.test_fraction, args.seed
    )
    print(
        f"convert_portraits: {counts['train']} train / {counts['test']} test images, {len(problems)} skipped "
        f"-> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
