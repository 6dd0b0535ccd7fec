"""What every command group shares: the parser class, ``--debug``, the local-only check of ``--base-url``.

The option types and ``--base-url`` itself are :mod:`qzhou_plugins.arguments`, shared with the
server and the bulk job.

Kept apart from :mod:`.parser`, which imports every command group, so that the groups can use
these without importing each other or the parser.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ..config import LOCAL_ONLY_OPTIONS
from .errors import UsageError

PROG = "qzhou-plugins"


class CommandParser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block and ``SystemExit`` from deep inside."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def add_debug(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    """``--debug``: accepted before the command (default False) and after it (SUPPRESS: not reset)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback on errors and debug logs",
    )


def remote_options(args: argparse.Namespace, *, not_for_the_model: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"base_url": URL}`` when ``--base-url`` is given, else ``{}``: the encoder options it adds.

    A flag that decides how a model is loaded here (``--device``, ``--dtype``: the configuration's
    local-only options) means nothing for a served model; given beside ``--base-url`` it is a usage
    error naming both, found before anything is read or loaded. ``not_for_the_model`` names the
    flags of a command that share a name but not the meaning (``embed --dtype`` is the storage dtype).
    """
    if getattr(args, "base_url", None) is None:
        return {}
    given = [
        f"--{name.replace('_', '-')}"
        for name in LOCAL_ONLY_OPTIONS
        if name not in not_for_the_model and getattr(args, name, None) is not None
    ]
    if given:
        flags, verb = " and ".join(given), "decides" if len(given) == 1 else "decide"
        raise UsageError(
            f"{flags} {verb} how a model is loaded in this process, but --base-url {args.base_url} "
            f"names a served model: leave {flags} out here and give {'it' if len(given) == 1 else 'them'} "
            f"to the server instead (`{PROG} serve {given[0]} ...`)"
        )
    return {"base_url": args.base_url}
