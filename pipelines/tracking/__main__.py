"""Send a run's buffered MLflow records (after an outage).

    python -m pipelines.tracking sync runs/<run> [--timeout SECONDS]

Exit status: 0 when the journal is all in MLflow, 1 when records are left (the journal keeps them).
"""

from __future__ import annotations

import argparse

from pipelines.config.logs import add_log_level_arg, setup_logging
from pipelines.tracking import journal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tracking", description=__doc__.split("\n")[0])
    add_log_level_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sync", help="send what runs/<run>/tracking/journal.jsonl still holds")
    p.add_argument("run_dir")
    p.add_argument("--timeout", type=float, default=120.0)
    add_log_level_arg(p, subcommand=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "tracking")
    left = journal.sync(args.run_dir, args.timeout)
    print(f"{left} records left" if left else "all records sent")
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
