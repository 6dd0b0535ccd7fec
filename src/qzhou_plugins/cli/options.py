"""What every command group shares: the parser class, the option types, ``--debug``.

Kept apart from :mod:`.parser`, which imports every command group, so that the groups can use
these without importing each other or the parser.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from .errors import UsageError

PROG = "qzhou-plugins"


class CommandParser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block and ``SystemExit`` from deep inside."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    """An option that counts something (tokens, a length): a whole number of at least 1.

    Checked by the parser, so that ``--max-length 0`` is a usage error naming the flag before any
    file is read or model loaded, not a validation error of the encoder's configuration.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def add_debug(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    """``--debug``: accepted before the command (default False) and after it (SUPPRESS: not reset)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback on errors and debug logs",
    )
