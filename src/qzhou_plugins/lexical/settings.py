"""What an index is built with, recorded in its folder and checked on every open.

An index's terms come from its analyzer and its scores from its engine and BM25 parameters, so
reopening it with other settings would mix terms that never match or rank one way on disk and another
in the code. As with a collection's embedding fingerprint, a reopen that asks for other settings is
refused before anything is read or written, saying what differs and how to proceed.

The record is ``lexical.json`` in the index's folder (:mod:`.folder`). ``format`` is the layout and
analyzer version of this package: a later release that changes either refuses an older index, by
name, rather than reading it wrongly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..validation import check_choice
from .analyzers import ANALYZERS, DEFAULT_ANALYZER

ENGINES = ("fts5", "tantivy")
DEFAULT_ENGINE = "fts5"
DEFAULT_K1 = 1.2
"""BM25's term-frequency saturation: Lucene's, Elasticsearch's and tantivy's default."""
DEFAULT_B = 0.75
"""BM25's document-length normalisation: Lucene's, Elasticsearch's and tantivy's default."""
TANTIVY_K1_B = (1.2, 0.75)
"""The BM25 parameters compiled into tantivy (see :mod:`qzhou_plugins.lexical.bm25`)."""
FORMAT_VERSION = 1
SETTINGS_FILE = "lexical.json"


class LexicalIndexError(RuntimeError):
    """A lexical index cannot be opened or used: not an index, another format, damaged or locked."""


class LexicalSettingsError(LexicalIndexError, ValueError):
    """A lexical index was built with other settings (engine, analyzer, k1, b) than asked for."""


@dataclass(frozen=True)
class LexicalSettings:
    """How an index analyzes and ranks: fixed when it is created, recorded beside it."""

    engine: str = DEFAULT_ENGINE
    analyzer: str = DEFAULT_ANALYZER
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_choice(self.engine, ENGINES, what="lexical engine")
        check_choice(self.analyzer, ANALYZERS, what="analyzer")
        object.__setattr__(self, "k1", _number(self.k1, "k1", 0.0, math.inf))
        object.__setattr__(self, "b", _number(self.b, "b", 0.0, 1.0))
        if self.engine == "tantivy" and (self.k1, self.b) != TANTIVY_K1_B:
            raise ValueError(
                f"the tantivy engine ranks with the BM25 parameters compiled into tantivy (k1=1.2, b=0.75), "
                f"not k1={self.k1}, b={self.b}; use engine='fts5' for other values"
            )

    @classmethod
    def chosen(
        cls, engine: str | None, analyzer: str | None, k1: float | None, b: float | None
    ) -> LexicalSettings:
        """The settings asked for, a default for each one left out (None)."""
        return cls(
            engine=DEFAULT_ENGINE if engine is None else engine,
            analyzer=DEFAULT_ANALYZER if analyzer is None else analyzer,
            k1=DEFAULT_K1 if k1 is None else k1,
            b=DEFAULT_B if b is None else b,
        )

    def differences(self, asked: dict[str, Any]) -> list[str]:
        """``name: recorded X, asked Y`` for each setting given (not None) that differs."""
        recorded = asdict(self)
        return [
            f"{name}: built with {recorded[name]!r}, asked for {value!r}"
            for name, value in asked.items()
            if value is not None and value != recorded[name]
        ]


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"BM25 {name} must be a finite number, not {value!r}")
    if not low <= value <= high:
        bounds = f"between {low:g} and {high:g}" if math.isfinite(high) else f"at least {low:g}"
        raise ValueError(f"BM25 {name} must be {bounds}, not {value!r}")
    return float(value)
