"""Fusing a dense and a lexical ranking: the one function set the collection, the CLI and eval use.

Each side is a ranking, best first, of ``(id, score)`` pairs (a :class:`~.LexicalHit` is one); the
fused list keeps, for each id, its score and 1-based rank on each side (None on a side that did not
find it), its fused score, and which side(s) found it.

- ``rrf`` (reciprocal-rank fusion, Cormack et al. 2009): ``sum over the sides that found the id of
  1 / (k + rank)``, k = 60 by default. It uses ranks only, so the two sides' score scales (a cosine,
  an unbounded BM25) never need to be comparable.
- ``weighted``: ``alpha * dense' + (1 - alpha) * lexical'``, where each side's scores are min-max
  normalised over that side's list (so its best is 1 and its worst 0; a side whose scores are all
  equal gives each 1) and a side that did not find the id contributes 0. ``alpha`` = 1 ranks by the
  dense side alone, 0 by the lexical side alone; 0.5 by default.

Ties in the fused score are broken by the best rank on either side, then by the dense side first,
then by the order the ids came in; the sort is :func:`qzhou_plugins.rerank.rank`, the package's one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..rerank import rank
from ..validation import check_choice, check_count

FUSIONS = ("rrf", "weighted")
DEFAULT_FUSION = "rrf"
DEFAULT_RRF_K = 60
DEFAULT_ALPHA = 0.5
MODES = ("dense", "lexical", "hybrid")
"""How a search ranks: by the dense side alone, the lexical side alone, or both fused."""
DEFAULT_MODE = "dense"
DEFAULT_CANDIDATES = 100
"""Hits each side hands to a hybrid fusion (the collection, the command line and the evaluation)."""

Ranking = Sequence[tuple[str, float]]
"""``(id, score)`` pairs, best first: a dense result's ids and similarities, or lexical hits."""


@dataclass(frozen=True)
class FusedHit:
    """One id of a fused ranking: its fused ``score`` and what each side said of it."""

    id: str
    score: float
    dense_score: float | None = None
    lexical_score: float | None = None
    dense_rank: int | None = None
    lexical_rank: int | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The side(s) that found it: ``("dense",)``, ``("lexical",)`` or ``("dense", "lexical")``."""
        return tuple(side for side, r in (("dense", self.dense_rank), ("lexical", self.lexical_rank)) if r)


@dataclass(frozen=True)
class SearchOptions:
    """How a search ranks: its ``mode`` and, for hybrid, the fusion and its parameters, each checked.

    ``candidates`` is how many hits each side hands to the fusion; ``rrf_k`` is RRF's constant and
    ``alpha`` the dense side's weight in a weighted fusion. The collection, the command line and the
    evaluation all take these, so a bad value gets the same error everywhere.
    """

    mode: str = DEFAULT_MODE
    fusion: str = DEFAULT_FUSION
    candidates: int = DEFAULT_CANDIDATES
    rrf_k: float = DEFAULT_RRF_K
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        check_choice(self.mode, MODES, what="mode")
        check_choice(self.fusion, FUSIONS, what="fusion")
        try:
            candidates = check_count(self.candidates, what="candidates", allow_none=False, minimum=1)
        except (TypeError, ValueError):
            raise ValueError(f"candidates must be a positive integer, not {self.candidates!r}") from None
        object.__setattr__(self, "candidates", candidates)
        object.__setattr__(self, "rrf_k", check_fusion_number(self.rrf_k, "rrf_k", high=math.inf))
        object.__setattr__(self, "alpha", check_fusion_number(self.alpha, "alpha", high=1.0))

    def fuse(self, dense: Ranking, lexical: Ranking, *, limit: int | None = None) -> list[FusedHit]:
        """:func:`fuse` with these options."""
        return fuse(dense, lexical, method=self.fusion, k=self.rrf_k, alpha=self.alpha, limit=limit)

    def describe(self) -> str:
        """The fusion in words, for reports: ``rrf (k=60), 100 candidates a side``."""
        how = f"rrf (k={self.rrf_k:g})" if self.fusion == "rrf" else f"weighted (alpha={self.alpha:g})"
        return f"{how}, {self.candidates} candidates a side"


def fuse(
    dense: Ranking,
    lexical: Ranking,
    *,
    method: str = DEFAULT_FUSION,
    k: float = DEFAULT_RRF_K,
    alpha: float = DEFAULT_ALPHA,
    limit: int | None = None,
) -> list[FusedHit]:
    """The two rankings fused by ``method`` (``"rrf"`` with ``k``, or ``"weighted"`` with ``alpha``).

    ``limit`` keeps the best that many (None: every id either side found).
    """
    if method == "rrf":
        return reciprocal_rank_fusion(dense, lexical, k=k, limit=limit)
    if method == "weighted":
        return weighted_fusion(dense, lexical, alpha=alpha, limit=limit)
    raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")


def reciprocal_rank_fusion(
    dense: Ranking, lexical: Ranking, *, k: float = DEFAULT_RRF_K, limit: int | None = None
) -> list[FusedHit]:
    """Each id scored ``sum of 1 / (k + rank)`` over the sides that found it (ranks from 1)."""
    k = check_fusion_number(k, "the RRF constant k", high=math.inf)
    limit = _checked_limit(limit)
    hits = _joined(dense, lexical)
    fused = [sum(1.0 / (k + r) for r in (hit.dense_rank, hit.lexical_rank) if r) for hit in hits]
    return _ranked(hits, fused, limit)


def weighted_fusion(
    dense: Ranking, lexical: Ranking, *, alpha: float = DEFAULT_ALPHA, limit: int | None = None
) -> list[FusedHit]:
    """Each id scored ``alpha * dense' + (1 - alpha) * lexical'`` over min-max normalised scores."""
    alpha = check_fusion_number(alpha, "alpha", high=1.0)
    limit = _checked_limit(limit)
    hits = _joined(dense, lexical)
    dense_normal = _min_max([hit.dense_score for hit in hits])
    lexical_normal = _min_max([hit.lexical_score for hit in hits])
    fused = [alpha * d + (1.0 - alpha) * s for d, s in zip(dense_normal, lexical_normal, strict=True)]
    return _ranked(hits, fused, limit)


def check_fusion_number(value: Any, what: str, *, high: float) -> float:
    """A finite number from 0 to ``high``: RRF's k (no upper bound) or alpha (at most 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    if not 0 <= value <= high:
        bounds = "from 0 to 1" if high == 1.0 else "at least 0"
        raise ValueError(f"{what} must be {bounds}, not {value!r}")
    return float(value)


def _joined(dense: Ranking, lexical: Ranking) -> list[FusedHit]:
    """One unfused hit per id either side found, in the tie-break order (best rank, dense first)."""
    sides = {"dense": _checked(dense, "dense"), "lexical": _checked(lexical, "lexical")}
    joined: dict[str, dict[str, Any]] = {}
    order = sorted(
        ((rank_, side_number, id_, score) for side_number, side in enumerate(sides)
         for rank_, (id_, score) in enumerate(sides[side], 1)),
        key=lambda entry: (entry[0], entry[1]),
    )  # fmt: skip
    for rank_, side_number, id_, score in order:
        side = "dense" if side_number == 0 else "lexical"
        fields = joined.setdefault(id_, {"id": id_, "score": 0.0})
        fields.update({f"{side}_score": score, f"{side}_rank": rank_})
    return [FusedHit(**fields) for fields in joined.values()]


def _checked(ranking: Ranking, side: str) -> list[tuple[str, float]]:
    """The ranking as (str id, finite float score) pairs, each id once, or an error naming the side."""
    if isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence):
        raise TypeError(
            f"the {side} ranking must be a list of (id, score) pairs, not {type(ranking).__name__}"
        )
    pairs: list[tuple[str, float]] = []
    seen: set[str] = set()
    for position, item in enumerate(ranking):
        id_, score = _pair(item, side, position)
        if id_ in seen:
            raise ValueError(f"the {side} ranking holds id {id_!r} twice (again at position {position})")
        seen.add(id_)
        pairs.append((id_, score))
    return pairs


def _pair(item: Any, side: str, position: int) -> tuple[str, float]:
    try:
        id_, score = item
    except (TypeError, ValueError):  # not a pair
        raise TypeError(
            f"the {side} ranking's item {position} is not an (id, score) pair, but {item!r}"
        ) from None
    if not isinstance(id_, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
        raise TypeError(f"the {side} ranking's item {position} must be a (str, number) pair, not {item!r}")
    if not math.isfinite(score):
        raise ValueError(f"the {side} ranking's item {position} has a score that is not finite: {score!r}")
    return id_, float(score)


def _min_max(scores: list[float | None]) -> list[float]:
    """Scores mapped to [0, 1] over those present (None, a side that did not find the id, gives 0)."""
    present = [score for score in scores if score is not None]
    if not present:
        return [0.0] * len(scores)
    low, high = min(present), max(present)
    if high == low:
        return [0.0 if score is None else 1.0 for score in scores]
    return [0.0 if score is None else (score - low) / (high - low) for score in scores]


def _checked_limit(limit: Any) -> int | None:
    try:
        return check_count(limit, what="limit", minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"limit must be a positive integer or None, not {limit!r}") from None


def _ranked(hits: list[FusedHit], fused: list[float], limit: int | None) -> list[FusedHit]:
    return [replace(hits[ranked.index], score=ranked.score) for ranked in rank(fused, top_n=limit)]
