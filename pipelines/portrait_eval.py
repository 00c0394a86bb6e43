"""Print the portrait scores of an evaluation: ``python -m pipelines.portrait_eval report metrics/portrait.json``.

The scores file holds numbers only (for ``dvc metrics diff``); the dataset, the protocol and the
portrait figures are in the evaluation record beside it (``metrics/portrait.protocol.json``),
which is what the report reads.
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
    add_log_level_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "portrait_eval")
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
