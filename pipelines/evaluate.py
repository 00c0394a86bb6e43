"""Evaluate a generator on every test pair with the field's metrics (the DVC ``evaluate`` stage).

    python -m pipelines.evaluate --dataset synthetic_fashion                       # latest checkpoint of the run
    python -m pipelines.evaluate --dataset synthetic_fashion --checkpoint runs/x/checkpoints/step-000000100
    python -m pipelines.evaluate --dataset synthetic_fashion --model models:/attnflow-pose@champion

Every test pair is generated in the pairs CSV's order and written as ``<from>_2_<to>.png`` (as the
field's code names them) under ``evaluate.images_dir``; the scores are computed on exactly those
uint8 pixels.  The same metrics are computed for two reference baselines on the same pairs
(``copy_source``: the source image unchanged; ``mean_train_image``: the per-pixel mean of the
training images) so that each score has context.  Outputs:

- ``metrics/<dataset>.json``: only numbers, for ``dvc metrics diff``: per method (the model, both
  baselines, the real targets) each score with its bootstrap 95% interval over identities (``_ci95_low/_high``),
  KID with its spread over subsets (``_std``), and the Fréchet distance where it is defined;
- ``metrics/<dataset>.protocol.json``: the evaluation record: the same scores, the per-pair values,
  the protocol (pair count and hash, image size, resize, file format, SSIM settings, feature
  networks with weight hashes beside the loss network's, reference set with its hash) with its own
  hash, which the registry compares before promoting, what was not computed and why, the generator;
- with ``evaluate.export_convention`` (gfla, nted, pidm): the same images copied to
  ``<evaluate.export_dir>/<dataset>/<convention>/`` under that method's file names, for the field's
  scripts and ``python -m pipelines.score``;
- ``plots/<dataset>/``: per-pair scores (CSV), SSIM histogram, training curves (PNG + CSV), a
  sample grid; all PNG so ``dvc plots show`` renders them offline;
- the same scores and files on the training run's MLflow entry.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.config.params import add_config_args, config_from_args, dataset_from_args
from pipelines.evaluation.compare import export_images
from pipelines.evaluation.generators import EvaluationError, generator_from_checkpoint, generator_from_model
from pipelines.evaluation.landmark_regressor import RegressorError
from pipelines.evaluation.report import summary_lines
from pipelines.evaluation.run import run_evaluation
from pipelines.runs.folder import RunFolder
from pipelines.runs.records import protocol_path
from pipelines.tracking.redact import redact

log = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="dataset name from params.yaml (default: train.dataset)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument(
        "--checkpoint",
        help="checkpoint folder (step-…) or a run's checkpoints folder "
        "(default: newest committed checkpoint of the run)",
    )
    src.add_argument("--model", help="MLflow model URI, e.g. models:/attnflow-pose@champion")
    ap.add_argument("--run-name", help="training run (default: train.run_name or the dataset)")
    ap.add_argument("--metrics", help="output JSON (default: metrics/<dataset>.json)")
    ap.add_argument("--plots", help="plots folder (default: plots/<dataset>)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log to the run's MLflow entry")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    ap.add_argument(
        "--landmark-regressor",
        type=Path,
        help="portrait datasets: the regressor of pipelines.train_landmarks "
        "(default: data/landmark_regressor/<dataset>.pt)",
    )
    add_config_args(ap)
    add_log_level_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "evaluate")
    cfg = config_from_args(args)
    dataset = args.dataset or cfg.train.dataset
    dataset_from_args(cfg, dataset)
    run = RunFolder.of(args.run_name or cfg.train.run_name or dataset, cfg.train.storage_path)
    try:
        if args.model:
            generator = generator_from_model(args.model)
            run_used = None
        else:
            generator, _, _ = generator_from_checkpoint(args.checkpoint or run.checkpoints)
            run_used = run if run.path.is_dir() else None
        record = run_evaluation(
            cfg,
            dataset,
            generator,
            run=run_used,
            metrics_path=Path(args.metrics or f"metrics/{dataset}.json"),
            plots_dir=Path(args.plots or f"plots/{dataset}"),
            log_mlflow=not args.no_mlflow,
            landmark_regressor=args.landmark_regressor,
            show_progress=not args.no_progress,
        )
    except (EvaluationError, RegressorError) as exc:
        log.error("%s", redact(str(exc)))
        return 2
    print("\n".join(summary_lines(record.to_dict())))
    print(f"scores:   {record.metrics_file}")
    print(f"protocol: {protocol_path(Path(record.metrics_file))}")
    print(f"images:   {record.images_dir}/")
    ecfg = cfg.evaluate
    if ecfg.export_convention != "none":
        out = Path(ecfg.export_dir) / dataset / ecfg.export_convention
        assert record.images_dir is not None  # run_evaluation always writes the images
        pairs = [(s, t) for s, t in record.pair_names]
        n = export_images(Path(record.images_dir), pairs, ecfg.export_convention, out)
        print(f"export:   {out}/ ({n} images named as {ecfg.export_convention} names them)")
    for f in record.plots or ():
        print(f"plot:     {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
