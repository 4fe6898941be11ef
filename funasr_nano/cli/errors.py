"""The exit-code contract, `CLIError`, and the one-line messages on stderr."""

from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_FILES = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130

PROG = "funasr-nano"


class CLIError(Exception):
    """An expected failure: printed as one ``error:`` line, mapped to an exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _debug_env() -> bool:
    return os.environ.get("FUNASR_NANO_DEBUG", "") not in ("", "0")


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)


def _note(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


