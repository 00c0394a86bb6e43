"""Stage ``synthesize``: render a synthetic dataset in the field's raw layout.

    python -m pipelines.synthesize --dataset synthetic_fashion [--out DIR] [--params FILE] [--set …]

Writes ``datasets.<name>.root`` (or ``--out``) atomically, prints the speed and where
the outputs are, and draws a contact sheet of identities × views with their
keypoints to ``reports/figures/<name>-contact.png``.  Unknown datasets, datasets
without a ``synthesize`` entry and bad config exit 2 with one line.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipelines.config.params import add_config_args, config_from_args


@dataclass(frozen=True)
class Generator:
    """Where a generator lives: ``module:function`` names, imported only when used."""

    write: str  # (spec, root, on_image) -> summary with .describe-able fields
    total: str  # (spec) -> number of images, for the progress bar
    describe: str  # (summary) -> one line


# One entry per SynthesizeSpec.generator value.
GENERATORS: dict[str, Generator] = {
    "figure": Generator("datasets.synthetic.fashion:write_dataset", "datasets.synthetic.fashion:total_images",
                        "datasets.synthetic.fashion:describe"),
    "portrait": Generator("datasets.synthetic.portrait:write_dataset", "datasets.synthetic.portrait:total_images",
                          "datasets.synthetic.portrait:describe"),
}

# The CSV prefixes each raw layout is read back with (see datasets.raw.layout).
LAYOUT_PREFIXES: dict[str, tuple[str, ...]] = {
    "deepfashion": ("fasion", "fashion", "fashion-resize", "fasion-resize"),
    "market": ("market",),
}


def _resolve(ref: str) -> Callable:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _fail(message: str) -> None:
    print(f"synthesize: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.synthesize",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="a synthetic dataset named in params.yaml datasets")
    parser.add_argument("--out", default=None, help="output folder (default: the dataset's root)")
    parser.add_argument("--contact", default=None,
                        help="contact sheet PNG (default: reports/figures/<dataset>-contact.png)")
    parser.add_argument("--no-contact", action="store_true", help="skip the contact sheet")
    parser.add_argument("--contact-identities", type=int, default=6, help="identities shown (default 6)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(parser)
    return parser


def read_annotations(root: Path, prefix: str, split: str) -> list[tuple[str, np.ndarray]]:
    """(name, int keypoints (x, y)) rows of a split, read the way the field's code reads them."""
    import pandas as pd

    frame = pd.read_csv(root / f"{prefix}-annotation-{split}.csv", sep=":")
    rows = []
    for name, ys, xs in zip(frame["name"], frame["keypoints_y"], frame["keypoints_x"]):
        rows.append((name, np.stack([np.array(json.loads(xs)), np.array(json.loads(ys))], axis=1)))
    return rows


def write_contact_sheet(root: Path, prefix: str, layout: str, out: Path, identities: int) -> Path:
    """Identities × views of the written dataset (train first, then test), skeletons drawn."""
    from datasets.raw.layout import get_layout, identity_of
    from datasets.sheets.pose_sheet import contact_sheet, save_png

    spec = get_layout(layout)
    rows: list[list] = []
    n_test = max(1, identities // 3)
    for split, limit in (("train", identities - n_test), ("test", n_test)):
        groups: dict[str, list] = {}
        for name, kp in read_annotations(root, prefix, split):
            key = identity_of(name, spec)
            if key not in groups and len(groups) == limit:
                continue
            image = np.asarray(Image.open(root / split / name).convert("RGB"))
            groups.setdefault(key, []).append((image, kp, f"{split} {Path(name).stem}"))
        rows += list(groups.values())
    return save_png(out, contact_sheet(rows, scale=2))


def write_portrait_contact_sheet(root: Path, prefix: str, out: Path, identities: int, views: int = 6) -> Path:
    """Portrait identities × views (train first, then test) with their landmarks, read back
    from the written JPEGs and CSVs (datasets.sheets.portrait_sheet)."""
    from datasets.sheets.pose_sheet import save_png
    from datasets.sheets.portrait_sheet import landmark_sheet
    from pipelines.portrait_sheets import pick_rows

    return save_png(out, landmark_sheet(pick_rows(root, prefix, identities, views), scale=3))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    name = args.dataset
    if name not in cfg.datasets:
        _fail(f"unknown dataset {name!r}; params.yaml datasets: {', '.join(sorted(cfg.datasets))}")
    if name not in cfg.synthesize:
        _fail(f"dataset {name!r} has no synthesize entry in {args.params} (it is read from its root, "
              f"not generated); synthetic datasets: {', '.join(sorted(cfg.synthesize)) or 'none'}")
    spec, dataset = cfg.synthesize[name], cfg.dataset(name)
    if spec.generator not in GENERATORS:
        _fail(f"synthesize.{name}.generator {spec.generator!r} is not available; known: "
              f"{', '.join(sorted(GENERATORS))}")
    prefixes = LAYOUT_PREFIXES.get(dataset.layout)
    if prefixes is not None and spec.file_prefix not in prefixes:
        _fail(f"synthesize.{name}.file_prefix {spec.file_prefix!r} does not match layout "
              f"{dataset.layout!r} (expected one of {', '.join(prefixes)})")
    if (spec.height, spec.width) != tuple(dataset.source_size):
        print(f"synthesize: note: images are {spec.height}x{spec.width} but datasets.{name}.source_size is "
              f"{dataset.source_size[0]}x{dataset.source_size[1]}; preprocess will rescale", file=sys.stderr)
    gen = GENERATORS[spec.generator]
    root = Path(args.out or dataset.root)
    bar = tqdm(total=_resolve(gen.total)(spec), unit="img", desc=f"synthesize {name}",
               disable=args.no_progress or None, file=sys.stderr)
    try:
        summary = _resolve(gen.write)(spec, root, lambda _sample: bar.update(1))
    except FileExistsError as exc:
        _fail(str(exc))
    finally:
        bar.close()
    print(f"synthesize {name}: {_resolve(gen.describe)(summary)}")
    print(f"synthesize {name}: dataset -> {root}")
    if not args.no_contact:
        out = Path(args.contact or f"reports/figures/{name}-contact.png")
        if dataset.layout == "portrait":
            write_portrait_contact_sheet(root, spec.file_prefix, out, args.contact_identities)
        else:
            write_contact_sheet(root, spec.file_prefix, dataset.layout, out, args.contact_identities)
        print(f"synthesize {name}: contact sheet -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
