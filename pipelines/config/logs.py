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


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was when logging was set up
    (pytest swaps it per test; a handler holding an old stream would write to a closed one)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def add_log_level_arg(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """``--log-level``. A command with sub-commands takes it on its own parser and, with
    ``subcommand=True``, on each sub-command's: there it has no default, which would otherwise
    override ``--log-level X sub …``."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=argparse.SUPPRESS if subcommand else "info",
        help="how much to log on stderr (default: info)",
    )


def _console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def setup_logging(level: str = "info", prog: str | None = None, *, own_console: bool = False) -> None:
    """Send log records at ``level`` and above to stderr, formatted for ``prog`` (default: the script).

    ``own_console``: also remove the root logger's other console handlers. A Ray Train worker
    starts with one of Ray's, which would print every record a second time, unprefixed; its
    file handlers stay.
    """
    prog = prog or (
        sys.argv[0].rsplit("/", 1)[-1].removesuffix(".py") if sys.argv and sys.argv[0] else "attnflow"
    )
    root = logging.getLogger()
    for handler in [
        h for h in root.handlers if getattr(h, "attnflow", False) or (own_console and _console(h))
    ]:
        root.removeHandler(handler)  # a command run twice in one process (tests) must not log twice
    handler = _Stderr()
    handler.attnflow = True  # type: ignore[attr-defined]
    handler.setFormatter(_Format(prog))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
