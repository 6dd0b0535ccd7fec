"""Lexical (BM25) search that knows nothing of Chroma: indexes, analyzers, and fusion with dense rankings.

- :func:`open_index` opens or creates a persisted :class:`LexicalIndex` in a folder of its own,
  with one of two engines: ``"fts5"`` (the default: SQLite FTS5 from the standard library, exact BM25
  with any ``k1`` and ``b``) or ``"tantivy"`` (the ``tantivy`` extra: faster on large corpora, BM25
  with tantivy's fixed k1 = 1.2, b = 0.75). :mod:`.bm25` explains the one formula and what each
  engine computes exactly.
- The analyzer, chosen per index, makes the terms: ``"english"`` (stemming and stopwords, the
  default), ``"chinese"`` and ``"auto"`` (jieba, the ``chinese`` extra); see :mod:`.analyzers`.
  An index records its engine, analyzer, k1 and b, and refuses to be reopened with others.
- :func:`repair` brings an index in step with its source of truth (the pending ids, then every id if
  the counts differ), which it knows only through two functions.
- :func:`fuse` merges a dense and a lexical ranking by reciprocal rank (``"rrf"``) or by a weighted
  sum of normalised scores (``"weighted"``); see :mod:`.fusion`.

Names are imported on first use, so ``import qzhou_plugins.lexical`` costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .analyzers import ANALYZERS, DEFAULT_ANALYZER, analyzer
    from .base import LexicalHit, LexicalIndex
    from .folder import remove_index
    from .fusion import (
        DEFAULT_ALPHA,
        DEFAULT_CANDIDATES,
        DEFAULT_FUSION,
        DEFAULT_MODE,
        DEFAULT_RRF_K,
        FUSIONS,
        MODES,
        FusedHit,
        SearchOptions,
        fuse,
        reciprocal_rank_fusion,
        weighted_fusion,
    )
    from .opening import open_index
    from .repairing import Repair, repair
    from .settings import (
        DEFAULT_B,
        DEFAULT_ENGINE,
        DEFAULT_K1,
        ENGINES,
        LexicalIndexError,
        LexicalSettings,
        LexicalSettingsError,
    )

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".analyzers": ("ANALYZERS", "DEFAULT_ANALYZER", "analyzer"),
        ".base": ("LexicalHit", "LexicalIndex"),
        ".folder": ("remove_index",),
        ".fusion": (
            "DEFAULT_ALPHA",
            "DEFAULT_CANDIDATES",
            "DEFAULT_FUSION",
            "DEFAULT_MODE",
            "DEFAULT_RRF_K",
            "FUSIONS",
            "MODES",
            "FusedHit",
            "SearchOptions",
            "fuse",
            "reciprocal_rank_fusion",
            "weighted_fusion",
        ),
        ".opening": ("open_index",),
        ".repairing": ("Repair", "repair"),
        ".settings": (
            "DEFAULT_B",
            "DEFAULT_CANDIDATES",
            "DEFAULT_ENGINE",
            "DEFAULT_K1",
            "DEFAULT_MODE",
            "ENGINES",
            "LexicalIndexError",
            "LexicalSettings",
            "LexicalSettingsError",
            "MODES",
        ),
    },
)

__all__ = [
    "ANALYZERS",
    "DEFAULT_ALPHA",
    "DEFAULT_ANALYZER",
    "DEFAULT_B",
    "DEFAULT_CANDIDATES",
    "DEFAULT_ENGINE",
    "DEFAULT_FUSION",
    "DEFAULT_K1",
    "DEFAULT_MODE",
    "DEFAULT_RRF_K",
    "ENGINES",
    "FUSIONS",
    "MODES",
    "FusedHit",
    "LexicalHit",
    "LexicalIndex",
    "LexicalIndexError",
    "LexicalSettings",
    "LexicalSettingsError",
    "Repair",
    "SearchOptions",
    "analyzer",
    "fuse",
    "open_index",
    "reciprocal_rank_fusion",
    "remove_index",
    "repair",
    "weighted_fusion",
]
