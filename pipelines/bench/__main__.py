"""Dispatch ``python -m pipelines.bench NAME [args]`` to ``pipelines.bench.NAME.main(args)``."""
from __future__ import annotations

import importlib
import sys

BENCHES = ("data", "model", "train")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m pipelines.bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"pipelines.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
