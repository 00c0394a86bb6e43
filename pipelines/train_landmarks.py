"""Train the landmark regressor that scores portrait outputs (``landmark_nme``): its own DVC stage.

    python -m pipelines.train_landmarks --dataset synthetic_portrait [--out data/landmark_regressor/NAME.pt]

Trained on the dataset's training shards only (seeded; the recipe is in
pipelines/evaluation/landmark_regressor.py) and written atomically; ``pipelines.evaluate`` reads it
and refuses one made for other shards.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from datasets import storage
from datasets.shards.tar import load_manifest
from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args
from pipelines.evaluation.landmark_regressor import regressor_path, train_and_save

log = logging.getLogger("train_landmarks")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.train_landmarks", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--dataset", required=True, help="a portrait dataset named in params.yaml")
    ap.add_argument("--out", type=Path, help="output file (default: data/landmark_regressor/<dataset>.pt)")
    add_config_args(ap)
    add_log_level_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "train_landmarks")
    cfg = config_from_args(args)
    spec = dataset_from_args(cfg, args.dataset)
    if spec.task != "portrait":
        log.error(
            "%s is a %s dataset; the landmark regressor is for portrait datasets", args.dataset, spec.task
        )
        return 2
    shards = storage.location(spec.shards)
    try:
        manifest = load_manifest(shards)
    except FileNotFoundError as exc:
        log.error("%s; run python -m pipelines.preprocess --dataset %s first", exc, args.dataset)
        return 2
    out = args.out or regressor_path(args.dataset)
    record = train_and_save(shards, manifest, out)
    print(
        f"{out}: {record['train_images']} training faces, training NME {record['train_nme']:.4f}, "
        f"{record['seconds']} s, weights {record['weights_sha256'][:12]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
