"""What every command group shares: the parser class, the option types, ``--debug``, ``--base-url``.

Kept apart from :mod:`.parser`, which imports every command group, so that the groups can use
these without importing each other or the parser.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from pydantic import ValidationError

from ..config import LOCAL_ONLY_OPTIONS, EncoderConfig
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


def add_base_url(parser: argparse.ArgumentParser) -> None:
    """``--base-url URL``: encode with a served model instead of loading it in this process.

    Defined once for every command that encodes, so that the flag reads and behaves the same in
    each. There is no key flag on purpose: a key on the command line ends up in the shell history
    and the process list, so it is read from the ``QZHOU_API_KEY`` environment variable.
    """
    parser.add_argument(
        "--base-url",
        type=_base_url,
        default=None,
        metavar="URL",
        help="encode with the model served at URL, an OpenAI-compatible API (`qzhou-plugins serve`, "
        "vLLM, text-embeddings-inference; e.g. http://host:8000/v1), instead of loading it here; "
        "--model must be the name the server serves it under. Instructions are still added here. "
        "The API key, if the server needs one, is read from $QZHOU_API_KEY",
    )


def _base_url(text: str) -> str:
    """The URL as :class:`~qzhou_plugins.EncoderConfig` accepts it (its check, not a second one)."""
    try:
        return str(EncoderConfig(base_url=text).base_url)
    except ValidationError as error:
        first = error.errors()[0]
        raise argparse.ArgumentTypeError(str(first.get("ctx", {}).get("error", first["msg"]))) from None


def remote_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{"base_url": URL}`` when ``--base-url`` is given, else ``{}``: the encoder options it adds.

    A flag that decides how a model is loaded here (``--device``, ``--dtype``: the configuration's
    local-only options) means nothing for a served model; given beside ``--base-url`` it is a usage
    error naming both, found before anything is read or loaded.
    """
    if getattr(args, "base_url", None) is None:
        return {}
    given = [
        f"--{name.replace('_', '-')}" for name in LOCAL_ONLY_OPTIONS if getattr(args, name, None) is not None
    ]
    if given:
        flags, verb = " and ".join(given), "decides" if len(given) == 1 else "decide"
        raise UsageError(
            f"{flags} {verb} how a model is loaded in this process, but --base-url {args.base_url} "
            f"names a served model: leave {flags} out here and give {'it' if len(given) == 1 else 'them'} "
            f"to the server instead (`{PROG} serve {given[0]} ...`)"
        )
    return {"base_url": args.base_url}
