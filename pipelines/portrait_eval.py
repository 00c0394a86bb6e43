"""Portrait evaluation reports.

``python -m pipelines.portrait_eval report metrics/portrait.json`` prints the scores of an
evaluation. The scores file holds numbers only (for ``dvc metrics diff``); the dataset, the
protocol and the portrait figures are in the evaluation record beside it
(``metrics/portrait.protocol.json``), which is what the report reads.

``python -m pipelines.portrait_eval fit --params params.yaml --params portrait/params.yaml
--checkpoint runs/portrait/checkpoints`` scores the edits on training identities beside held-out
ones (:mod:`pipelines.evaluation.portrait_fit`): whether an edit that does not arrive is not learnt
or not carried over to new faces.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.evaluation.portrait import report
from pipelines.runs.records import protocol_path

log = logging.getLogger("portrait_eval")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m pipelines.portrait_eval", description="portrait evaluation report"
    )
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="print a portrait metrics JSON (pipelines.evaluate's output)")
    rep.add_argument("metrics", type=Path)
    fit = sub.add_parser(
        "fit", help="edit scores on training identities beside held-out ones (synthetic portraits only)"
    )
    fit.add_argument("--checkpoint", required=True, help="a run's checkpoints folder or one step folder")
    fit.add_argument(
        "--params", action="append", help="params file(s), later ones replace sections (default params.yaml)"
    )
    fit.add_argument("--dataset", help="a synthetic portrait dataset (default: train.dataset)")
    fit.add_argument("--identities", type=int, default=10, help="identities per split (default 10)")
    fit.add_argument("--out", type=Path, help="also write the scores as JSON here")
    add_log_level_arg(ap)
    return ap


def fit_report(args: argparse.Namespace) -> int:
    from pipelines.config.params import ConfigError, load_config
    from pipelines.evaluation import portrait_fit
    from pipelines.evaluation.generators import EvaluationError, generator_from_checkpoint
    from pipelines.evaluation.run import open_test_set

    try:
        cfg = load_config(args.params or ["params.yaml"])
        dataset = args.dataset or cfg.train.dataset
        spec = cfg.synthesize.get(dataset)
        if spec is None or spec.generator != "portrait":
            log.error(
                "%s is not a synthetic portrait dataset of params' synthesize section: its training "
                "identities cannot be rendered again",
                dataset,
            )
            return 2
        sigma = float(open_test_set(cfg, dataset).manifest["preprocess"]["heatmap_sigma"])
        model = generator_from_checkpoint(args.checkpoint)[0]
        by_split = {
            split: portrait_fit.edit_scores(
                model.fn,
                spec,
                portrait_fit.identities(spec, split, args.identities),
                sigma,
                f"{split} identities",
            )
            for split in ("train", "test")
        }
    except (ConfigError, EvaluationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    views = {split: int(next(iter(scores.values()))["sources"]) for split, scores in by_split.items()}
    print(
        f"{dataset}: {views['train']} training and {views['test']} held-out views (up to {args.identities} "
        f"identities each), {model.info.get('path', args.checkpoint)}"
    )
    print(portrait_fit.table(by_split))
    if args.out is not None:
        from datasets.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(by_split, indent=2, sort_keys=True) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "portrait_eval")
    if args.command == "fit":
        return fit_report(args)
    record = args.metrics if args.metrics.name.endswith(".protocol.json") else protocol_path(args.metrics)
    if not record.is_file():
        log.error(
            "%s not found (the evaluation record beside %s); run make run-portrait first",
            record,
            args.metrics,
        )
        return 2
    print(report(json.loads(record.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
