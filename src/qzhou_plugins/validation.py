"""The one check that every text passes before any model work, whichever edge it came through.

A bad input must fail here, with its position, rather than deep inside a tokenizer or, worse, come
out as a plausible vector: an empty or invisible text would be embedded as the bare instruction,
a dict as its keys, a lone surrogate would crash the Rust tokenizer with no position. Adapters,
the Chroma helpers, the CLI and the server all call :func:`validate_texts`, so every edge refuses
the same things with the same words.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Set
from typing import Any

_WORD = re.compile(r"\w")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
"""Control, format (zero-width, BOM), surrogate and separator characters."""


def positions(found: list[int], shown: int = 10) -> str:
    """``1, 3, 7`` or ``0, 1, ..., 9, ... (15 in all)``: the positions of the bad items of a list."""
    head = ", ".join(str(p) for p in found[:shown])
    return head + (f", ... ({len(found)} in all)" if len(found) > shown else "")


def has_content(text: str) -> bool:
    """Whether ``text`` has a visible character: not only white space, control or zero-width ones."""
    if _WORD.search(text):  # the fast path: almost every real text has a letter or a digit
        return True
    return any(unicodedata.category(character) not in _INVISIBLE_CATEGORIES for character in text)


def find_lone_surrogate(text: str) -> int | None:
    """Where the first lone surrogate of ``text`` is (None: there is none).

    A lone surrogate (from a JSON escape such as ``"\\ud800"`` or a ``surrogateescape`` decode) is
    a ``str`` that cannot be encoded as UTF-8: tokenizers, Chroma and parquet all fail on it deep
    inside, with no position. Every edge asks here, and names the place in its own words.
    """
    found = _SURROGATE.search(text)
    return None if found is None else found.start()


def as_list(items: Any, *, what: str, kind: str = "strings") -> list[Any]:
    """``items`` as a list, refusing what would be silently misread as one.

    A string would be iterated character by character, a mapping by its keys, a set in no stable
    order; a generator is consumed once, so the list made here is what the caller must go on with.
    """
    if isinstance(items, (str, bytes, bytearray)):
        return _refuse(f"{what} must be a list of {kind}, not a single {type(items).__name__}")
    if isinstance(items, (Mapping, Set)):
        return _refuse(f"{what} must be a list of {kind}, not a {type(items).__name__}")
    if isinstance(items, list):
        return items
    if not isinstance(items, Iterable):
        return _refuse(f"{what} must be a list of {kind}, not {type(items).__name__}")
    return list(items)


def _refuse(message: str) -> list[Any]:
    raise TypeError(message)


def validate_texts(texts: Any, *, what: str = "texts") -> list[str]:
    """The texts as a list, once every one is known to be a string with something to embed.

    Refused, with the positions named: ``None`` and non-strings; texts that are empty or only white
    space, control or zero-width characters (they would all get the vector of the bare instruction);
    lone surrogates, which cannot be encoded as UTF-8.
    """
    items = as_list(texts, what=what)
    nones = [i for i, t in enumerate(items) if t is None]
    others = [i for i, t in enumerate(items) if t is not None and not isinstance(t, str)]
    if nones or others:
        parts = []
        if nones:
            parts.append(f"None at position(s) {positions(nones)}")
        if others:
            kinds = sorted({type(items[i]).__name__ for i in others})
            parts.append(f"non-string ({', '.join(kinds)}) at position(s) {positions(others)}")
        raise TypeError(f"{what} must all be strings: {'; '.join(parts)}")
    blank = [i for i, t in enumerate(items) if not t.strip()]
    if blank:
        raise ValueError(f"{what} must not be empty or whitespace-only: position(s) {positions(blank)}")
    broken = [i for i, t in enumerate(items) if find_lone_surrogate(t) is not None]
    if broken:
        first = items[broken[0]]
        at = find_lone_surrogate(first)
        assert at is not None
        raise ValueError(
            f"{what} must be valid Unicode: position(s) {positions(broken)} hold a lone surrogate "
            f"(the first, {first[at]!r}, at character {at} of position {broken[0]}){_byte_note(first[at])}; "
            f"{_SURROGATE_ADVICE}"
        )
    invisible = [i for i, t in enumerate(items) if not has_content(t)]
    if invisible:
        raise ValueError(
            f"{what} must have visible content: position(s) {positions(invisible)} hold only control, "
            "zero-width or other invisible characters"
        )
    return items


def validate_text(text: Any, *, what: str = "query") -> str:
    """One text (a query), checked as :func:`validate_texts` checks each item of a list."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, not {type(text).__name__}")
    at = find_lone_surrogate(text)
    if at is not None:  # said of one text, not of "position(s) 0" of a list the caller never gave
        raise ValueError(
            f"{what} must be valid Unicode: it holds a lone surrogate {text[at]!r} at character "
            f"{at}{_byte_note(text[at])}; {_SURROGATE_ADVICE}"
        )
    return validate_texts([text], what=what)[0]


_SURROGATE_ADVICE = "decode the source with errors='replace' or fix it"


def _byte_note(character: str) -> str:
    """What a surrogate of U+DC80..U+DCFF is: a byte that was not UTF-8, kept by ``surrogateescape``
    (how Python reads a command-line argument, a file name or an environment variable it cannot
    decode), so that the user looks at the encoding of what they typed rather than at their text."""
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        return (
            f" (it stands for the byte 0x{code - 0xDC00:02x}, which is not UTF-8: Python keeps such a "
            "byte of a command-line argument or a file name so)"
        )
    return ""


def check_count(value: Any, *, what: str, allow_none: bool = True, minimum: int = 0) -> int | None:
    """A count given by a user (``top_n``, ``n_results``): an int, never a bool or a float."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an int or None" if allow_none else "an int"
        raise TypeError(f"{what} must be {expected}, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, not {value}")
    return value


def check_flag(value: Any, *, what: str) -> bool | None:
    """A yes/no option given by a user (``show_progress``): True, False or None, nothing else.

    Python would take any value as true or false: ``show_progress="no"`` would show the bar.
    """
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{what} must be True, False or None, not {type(value).__name__} {value!r}")
    return value


def check_score(value: Any, *, what: str) -> float | None:
    """A score threshold: a finite number or None (NaN would silently drop everything)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number or None, not {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return float(value)


def check_choice(value: Any, choices: Iterable[str], *, what: str) -> str:
    """``value`` if it is one of ``choices``; else an error naming them all (a typo is seen at once)."""
    listed = tuple(choices)
    if not isinstance(value, str) or value not in listed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(listed)}")
    return value
