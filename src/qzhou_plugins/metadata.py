"""Record metadata as Chroma stores it faithfully, refused in our words otherwise.

Chroma's own checks let through values that it then stores wrongly or rejects deep inside its Rust
core: NaN and infinities are stored as None, an int beyond 64 bits as a float that no filter finds
again, a NaN inside a list makes the write fail in compaction; a None value, an empty key, a key
starting with ``#`` or ``$`` or a lone surrogate fail with a message that names neither the record
nor the key. Each is refused here, naming the record and the key, before anything is written.

Neutral ground without Chroma, so that every way in applies the same rules: ``QZhouCollection.add``
and ``load`` (:mod:`qzhou_plugins.integrations.chroma.metadata` adds Chroma's own last check) and the
bulk job, which checks a corpus's metadata before any model work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .validation import find_lone_surrogate

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The integers Chroma stores as integers; beyond them it silently stores a float."""

RESERVED_KEY = "chroma:document"
RESERVED_KEY_STARTS = ("#", "$")
"""Chroma keeps keys starting with these for its own fields (``#document``) and operators (``$and``)."""

_SCALARS = (str, bool, int, float)


def check_metadata(metadata: Mapping[Any, Any], where: str, *, also: tuple[type, ...] = ()) -> None:
    """Refuse any key or value of ``metadata`` that Chroma would not store as given.

    ``where`` names the record in the messages (``metadatas[3]``, ``corpus.jsonl:7: metadata``);
    values of the types in ``also`` are left to their owner's checks (Chroma's sparse vectors).
    """
    for key, value in metadata.items():
        _check_key(key, where)
        _check_value(value, f"{where}[{key!r}]", also)


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}: keys must be strings")
    if not key:
        raise ValueError(f"{where} has an empty key '': Chroma needs a name for each metadata field")
    if key == RESERVED_KEY or key.startswith(RESERVED_KEY_STARTS):
        raise ValueError(
            f"{where} has the key {key!r}: Chroma reserves {RESERVED_KEY!r} and keys starting with "
            f"{' or '.join(RESERVED_KEY_STARTS)} for its own fields and operators; rename it"
        )
    check_unicode(key, f"{where} key {key!r}")


def _check_value(value: Any, where: str, also: tuple[type, ...]) -> None:
    """One metadata value: a finite float, a 64-bit int, a bool, a string, or a list of one kind."""
    if value is None:
        raise ValueError(f"{where} is None: Chroma cannot store a None value; leave the key out")
    if isinstance(value, list):
        _check_list(value, where)
    elif isinstance(value, _SCALARS):
        _check_scalar(value, where)
    elif not isinstance(value, also):
        raise ValueError(
            f"{where} is a {type(value).__name__} ({value!r}): Chroma stores str, int, float, bool "
            "or a non-empty list of one of those"
        )


def _check_list(values: list[Any], where: str) -> None:
    if not values:
        raise ValueError(f"{where} is an empty list: Chroma stores lists of at least one value")
    kinds = {bool if isinstance(item, bool) else type(item) for item in values}
    if len(kinds) > 1 or not kinds <= set(_SCALARS):
        names = ", ".join(sorted(kind.__name__ for kind in kinds))
        raise ValueError(
            f"{where} is a list of {names}: Chroma stores lists of one type, str, int, float or bool"
        )
    for index, item in enumerate(values):
        _check_scalar(item, f"{where}[{index}]")


def _check_scalar(value: str | bool | int | float, where: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(
            f"{where} is {value!r}: Chroma would store it as None (or fail); store a finite number, or "
            "leave the key out"
        )
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(
            f"{where} is {value}, outside the 64-bit range Chroma stores as an integer: it would become "
            "a float that no filter finds again; store it as a string"
        )
    if isinstance(value, str):
        check_unicode(value, where)


def check_unicode(text: str, where: str) -> None:
    """Refuse a lone surrogate, which Chroma cannot encode (a UnicodeEncodeError with no position)."""
    at = find_lone_surrogate(text)
    if at is not None:
        raise ValueError(
            f"{where} holds a lone surrogate ({text[at]!r} at character {at}), which "
            "cannot be stored as UTF-8; decode the source with errors='replace' or fix it"
        )
