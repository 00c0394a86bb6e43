"""Score a folder of another method's held-out outputs against the dataset's test targets, under this project's protocol.

    python -m pipelines.score --dataset deepfashion --generated results/gfla --out scores/gfla.json
    python -m pipelines.score --dataset deepfashion --generated results/pidm --out scores/pidm.json --resize bicubic

The folder holds one image per test pair, named as the method's public code names its outputs
(``--convention``: gfla ``<source>_2_<target>_vis.jpg``, gfla-all GFLA's three-panel strip, nted,
pidm, attnflow ``<source>_2_<target>.png``; auto picks the one the names fit and says which).  A
test pair without its image, or an image that is no test pair's, stops the run with the lists.
Images of another size than the dataset's are refused unless ``--resize`` says how to bring them to
it.  The same scores as pipelines.evaluate's are computed on the same pairs by the same code: field
SSIM and the fixed-range SSIM, PSNR, LPIPS / FID / KID when their weights are given (evaluate.*),
their feature-network fallbacks otherwise, the masked scores on Market layouts, with identity
bootstrap intervals and paired verdicts against both baselines.  Outputs:

- FILE: the folder's scores, numbers only (``ssim``, ``psnr``, …, with ``_ci95_low/_high``);
- FILE's record (``scores/gfla.protocol.json`` beside ``scores/gfla.json``): the protocol, with the
  same hash pipelines.evaluate records for this dataset and these settings, the baselines and the
  held-out targets scored alongside, per-pair values, and under ``generator`` the folder, the
  convention, the resize policy and a hash of the images scored.

Bad input (unknown dataset, no such folder, missing or extra pairs, an unreadable image, a size
the resize policy refuses) exits 2 with one message naming the file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args
from pipelines.evaluation.compare import score_folder, write_scores
from pipelines.evaluation.generated import RESIZE
from pipelines.evaluation.generators import EvaluationError
from pipelines.evaluation.naming import CHOICES, FolderError
from pipelines.evaluation.report import summary_lines
from pipelines.tracking.redact import redact

log = logging.getLogger("score")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.score",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='docs/evaluation.md "Compare with published methods" has the conventions with their sources',
    )
    ap.add_argument(
        "--dataset", required=True, help="dataset name from params.yaml (its test shards hold the pairs)"
    )
    ap.add_argument(
        "--generated", required=True, type=Path, help="folder of generated images, one per test pair"
    )
    ap.add_argument(
        "--out", required=True, type=Path, help="scores JSON to write (the record goes beside it)"
    )
    ap.add_argument(
        "--convention",
        default="auto",
        choices=CHOICES,
        help="how the files are named (default: auto, from the names)",
    )
    ap.add_argument(
        "--resize",
        default="none",
        choices=list(RESIZE),
        help="images of another size than the dataset's: "
        + "; ".join(f"{k}: {v}" for k, v in RESIZE.items()),
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_config_args(ap)
    add_log_level_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "score")
    cfg = config_from_args(args)
    dataset_from_args(cfg, args.dataset)
    try:
        doc = score_folder(
            cfg,
            args.dataset,
            args.generated,
            args.convention,
            args.resize,
            show_progress=not args.no_progress,
        )
    except (EvaluationError, FolderError) as exc:
        log.error("%s", redact(str(exc)))
        return 2
    record = write_scores(doc, args.out)
    gen = doc["generator"]
    print(f"{args.generated}: {gen['images']} images, {gen['convention_chosen']}, resize {gen['resize']}")
    print("\n".join(summary_lines(doc, label="generated")))
    print(f"scores:   {args.out}")
    print(f"protocol: {record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
