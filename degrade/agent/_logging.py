"""Logging for the long-running commands: one line per event on stderr, never a bare traceback.

``degrade agent`` (and ``degrade check``) log through the standard
:mod:`logging` package under the ``degrade`` logger. The formatter folds
any exception text into the same line, so a log shipper that reads one
event per line (journald, Fluent Bit, kubectl logs) never splits an event.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure", "LEVELS", "OneLineFormatter"]

LEVELS = ("debug", "info", "warning", "error")


class OneLineFormatter(logging.Formatter):
    """``degrade <command>: LEVEL: message``, with newlines (tracebacks included) folded to `` | ``."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            exc = record.exc_info[1]
            msg = f"{msg}: {type(exc).__name__}: {exc}" if exc is not None else msg
        if record.stack_info:
            msg = f"{msg} | {record.stack_info}"
        level = record.levelname.lower()
        return f"degrade {self.command}: {level}: " + " | ".join(
            s for s in msg.splitlines() if s.strip()
        )


class _Handler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirection and test capture work)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(command: str, level: str = "info"):
    """Route the ``degrade`` logger to stderr, one line per event, at ``level``.

    Returns a function that undoes it (the command calls it on exit, so an
    in-process caller's logging is left as it was). Records still propagate
    to the root logger, so an application's own handlers see them too.
    """
    logger = logging.getLogger("degrade")
    old_level = logger.level
    for h in list(logger.handlers):
        if isinstance(h, _Handler):
            logger.removeHandler(h)
    h = _Handler()
    h.setFormatter(OneLineFormatter(command))
    logger.addHandler(h)
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))

    def restore() -> None:
        logger.removeHandler(h)
        logger.setLevel(old_level)

    return restore
