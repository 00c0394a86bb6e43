"""Dispatch ``python -m pipelines.bench NAME [args]`` to the main(args) of the module BENCHES names."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pipelines.bench import data, model, prepare_throughput, preprocess_throughput, serve, train_throughput
from pipelines.config.logs import LEVELS

BENCHES: dict[str, Callable[[list[str]], int | None]] = {
    "data": data.main,
    "model": model.main,
    "prepare": prepare_throughput.main,
    "preprocess": preprocess_throughput.main,
    "serve": serve.main,
    "train": train_throughput.main,
}
USAGE = (
    f"usage: python -m pipelines.bench {{{','.join(BENCHES)}}} [--log-level {{{','.join(LEVELS)}}}] [options]"
    "   (NAME --help for each one's options)"
)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(
            USAGE
            + "\n\n"
            + "\n".join(
                f"  {name:<6} {(sys.modules[fn.__module__].__doc__ or '').splitlines()[0]}"
                for name, fn in BENCHES.items()
            )
        )
        return 0
    if not argv or argv[0] not in BENCHES:
        print(USAGE, file=sys.stderr)
        return 2
    return int(BENCHES[argv[0]](argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
