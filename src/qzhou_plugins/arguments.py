"""Command-line option types that every command-line edge shares (the CLI, the server, the bulk job).

A neutral module, so that ``server`` and ``bulk`` (which the CLI imports) can use them without
importing the CLI: each flag that counts something is checked the same way and fails with the same
words, before any file is read or model loaded.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from .config import EncoderConfig

Number = TypeVar("Number", int, float)


def positive(kind: type[Number] = int, *, zero: bool = False) -> Callable[[str], Number]:
    """An argparse type: a finite number of ``kind`` above zero (from zero with ``zero``).

    ``--replicas 0``, ``--max-length -1`` or ``--chunk-overlap -1`` are then usage errors naming
    the flag, not validation errors from deep inside the encoder's configuration.
    """
    wanted = "zero or more" if zero else f"a positive {'integer' if kind is int else 'number'}"

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not math.isfinite(value) or not (value >= 0 if zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


positive_int = positive(int)
"""The common case: a whole number of at least 1 (tokens, a length, replicas, actors)."""


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


def add_family_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--family`` and ``--dimensions``: the model family's rules and the Matryoshka size, defined once
    for every command that encodes, with :class:`~qzhou_plugins.EncoderConfig`'s meaning and checks."""
    from .families import known_families

    parser.add_argument(
        "--family",
        default=None,
        choices=list(known_families()),
        help="model family, whose attention, pooling, padding, end token and instructions apply "
        "(default: recognised from the checkpoint, or from the server)",
    )
    parser.add_argument(
        "--dimensions",
        type=positive_int,
        default=None,
        metavar="N",
        help="Matryoshka size: keep the first N dimensions of each vector, renormalised; only for "
        "families trained for it (Qwen3-Embedding; default: the full vector)",
    )


def family_options(args: argparse.Namespace) -> dict[str, object]:
    """The encoder options of ``--family`` and ``--dimensions``: only those given."""
    return {name: getattr(args, name) for name in ("family", "dimensions") if getattr(args, name, None)}
