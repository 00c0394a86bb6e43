"""How the commands log: library code logs through ``logging``; each command sets the level once.

Messages read as before the switch to logging: ``[<command>] message`` for progress and notes,
``warning: …`` and ``error: …`` for problems, all on stderr (stdout stays for a command's result).
"""
from __future__ import annotations

import argparse
import logging
import sys

LEVELS = ("debug", "info", "warning", "error")


class _Format(logging.Formatter):
    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"[{self.prog}] warning: {message}"
        return f"[{self.prog}] {message}"


def add_log_level_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default="info",
                        help="how much to log on stderr (default: info)")


def setup_logging(level: str = "info", prog: str | None = None) -> None:
    """Send log records at ``level`` and above to stderr, formatted for ``prog`` (default: the script)."""
    prog = prog or (sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py") if sys.argv and sys.argv[0] else "attnflow")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "attnflow", False)]:
        root.removeHandler(handler)  # a command run twice in one process (tests) must not log twice
    handler = logging.StreamHandler(sys.stderr)
    handler.attnflow = True  # type: ignore[attr-defined]
    handler.setFormatter(_Format(prog))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
