"""The flags of hybrid search: how ``query`` and ``eval retrieval`` rank, and how a lexical index is made.

- ``--mode dense|lexical|hybrid``, ``--fusion rrf|weighted``, ``--rrf-k``, ``--alpha``, ``--candidates``
  (``query`` and ``eval retrieval``): the options of :meth:`QZhouCollection.query`, with its defaults;
- ``--analyzer english|chinese|auto`` and ``--lexical-engine fts5|tantivy`` (``index``, ``load``,
  ``eval retrieval``): how a new lexical index is made (an existing collection keeps what it records).

Each value is checked by argparse, so a bad one is a usage error naming the flag. The choices come from
:mod:`qzhou_plugins.lexical`, which imports nothing heavy, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..arguments import positive, positive_int
from ..lexical.analyzers import ANALYZERS
from ..lexical.fusion import (
    DEFAULT_ALPHA,
    DEFAULT_CANDIDATES,
    DEFAULT_FUSION,
    DEFAULT_MODE,
    DEFAULT_RRF_K,
    FUSIONS,
    MODES,
)
from ..lexical.settings import ENGINES


def add_search_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--mode`` and the fusion's flags; ``what`` says what is ranked (in the help)."""
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help=f"rank {what} by meaning (dense: the model's vectors), by words (lexical: BM25) or by both, "
        "fused (hybrid) (default: %(default)s)",
    )
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=DEFAULT_FUSION,
        help="how --mode hybrid fuses the two rankings: reciprocal ranks (rrf) or a weighted sum of "
        "normalised scores (weighted) (default: %(default)s)",
    )
    parser.add_argument(
        "--rrf-k",
        type=positive(float, zero=True),
        default=DEFAULT_RRF_K,
        metavar="K",
        help="the constant of reciprocal-rank fusion: 1 / (K + rank) (default: %(default)s)",
    )
    parser.add_argument(
        "--alpha",
        type=_fraction,
        default=DEFAULT_ALPHA,
        help="weight of the dense side in --fusion weighted, from 0 (words only) to 1 (meaning only) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--candidates",
        type=positive_int,
        default=DEFAULT_CANDIDATES,
        metavar="N",
        help="results each side hands to --mode hybrid's fusion (default: %(default)s)",
    )


def search_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed search flags as keyword arguments of :meth:`QZhouCollection.query`."""
    return {
        "mode": args.mode,
        "fusion": args.fusion,
        "rrf_k": args.rrf_k,
        "alpha": args.alpha,
        "candidates": args.candidates,
    }


def add_lexical_options(parser: argparse.ArgumentParser, *, new: str) -> None:
    """``--analyzer`` and ``--lexical-engine``; ``new`` says what they make (in the help)."""
    parser.add_argument(
        "--analyzer",
        choices=ANALYZERS,
        default=None,
        help=f"how {new} splits text into words: english (stemmed, stopwords dropped), chinese (jieba, "
        "Latin words as english) or auto (Chinese runs segmented, the rest as english) (default: "
        "english, or what an existing collection records)",
    )
    parser.add_argument(
        "--lexical-engine",
        choices=ENGINES,
        default=None,
        help=f"the engine of {new}: fts5 (SQLite, the default) or tantivy (faster on large corpora; the "
        "tantivy extra)",
    )


def lexical_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--lexical-dir``, ``--analyzer`` and ``--lexical-engine`` as options of ``QZhouCollection.open``."""
    return {
        "lexical_path": args.lexical_dir,
        "analyzer": getattr(args, "analyzer", None),
        "lexical_engine": getattr(args, "lexical_engine", None),
    }


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text}")
    return value


_fraction.__name__ = "float"
