"""The one place that scores candidates against a query, sorts them and cuts them to the top.

A *scorer* is a :class:`Reranker` (any kind: an embedding model's cosine, a cross-encoder, an LLM
yes/no judge; see :mod:`.reranker`) or an :class:`~qzhou_plugins.Encoder`, which reranks as its own
embedding reranker (the cosine of the instructed query and each candidate in one forward pass; what
QZhou was evaluated with on the MTEB reranking tasks). Every adapter, the Chroma helper, the server
and the evaluation call :func:`score_candidates` and :func:`rank`, so they validate, treat empty
candidates and break ties alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..backends.base import unit_rows
from ..instructions import TaskLike, TaskType
from ..validation import as_list, check_count, check_score, has_content, validate_text, validate_texts
from .scores import check_finite

if TYPE_CHECKING:
    from ..encoder import Encoder
    from .reranker import Reranker

LOWEST_SCORE = -1.0
"""The score given to an empty candidate by an embedding reranker: no cosine can be lower (other
kinds use the floor of their own scale: :attr:`Reranker.lowest_score`)."""

EmptyCandidates = Literal["error", "lowest"]
EMPTY_MODES: tuple[str, ...] = ("error", "lowest")

__all__ = [
    "LOWEST_SCORE",
    "RankedCandidate",
    "Reranker",
    "as_reranker",
    "check_finite",
    "rank",
    "rerank",
    "score_candidates",
    "unit_rows",
]


def __getattr__(name: str) -> Any:
    if name == "Reranker":  # torch-free import of this module for the sort alone
        from .reranker import Reranker

        return Reranker
    raise AttributeError(name)


@dataclass(frozen=True)
class RankedCandidate:
    """A candidate's place in the caller's list and its relevance to the query (on the scorer's scale)."""

    index: int
    score: float


def as_reranker(scorer: Encoder | Reranker | Any) -> Any:
    """``scorer`` as something with ``score_pairs`` and ``lowest_score``: a Reranker (or the server's
    queued one) as it is, an encoder as its embedding reranker (:meth:`Reranker.of_encoder`)."""
    if hasattr(scorer, "score_pairs"):
        return scorer
    from .reranker import Reranker

    return Reranker.of_encoder(scorer)


def score_candidates(
    scorer: Encoder | Reranker,
    query: str,
    candidates: Sequence[str | None],
    *,
    task: TaskLike = TaskType.RERANKING,
    instruction: str | None = None,
    empty: EmptyCandidates = "error",
    show_progress: bool | None = None,
) -> np.ndarray:
    """The score of each candidate against ``query``, in the caller's order, on the scorer's scale.

    ``empty="lowest"`` scores blank or missing candidates the scorer's lowest score instead of
    raising: a chain that reranks whatever a retriever returned should not fail on one empty page.
    ``instruction`` overrides the task's instruction (see :meth:`Reranker.score_pairs`).
    """
    if empty not in EMPTY_MODES:
        raise ValueError(f"empty must be one of {', '.join(EMPTY_MODES)}, not {empty!r}")
    query = validate_text(query, what="query")
    candidates = as_list(candidates, what="candidates")
    if empty == "lowest":
        filled = [i for i, text in enumerate(candidates) if isinstance(text, str) and has_content(text)]
        # What remains must still be valid text (no lone surrogate), named at its own position.
        kept = set(filled)
        validate_texts([t if i in kept else "-" for i, t in enumerate(candidates)], what="candidates")
    else:
        validate_texts(candidates, what="candidates")
        filled = list(range(len(candidates)))
    reranker = as_reranker(scorer)
    scores = np.full(len(candidates), reranker.lowest_score, dtype=np.float32)
    if not filled:
        return scores
    documents = [str(candidates[i]) for i in filled]
    scores[filled] = reranker.score_pairs(
        [query] * len(filled), documents, task=task, instruction=instruction, show_progress=show_progress
    )
    return check_finite(scores)


def rank(
    scores: Sequence[float] | np.ndarray, *, top_n: int | None = None, threshold: float | None = None
) -> list[RankedCandidate]:
    """Positions by decreasing score: at most ``top_n`` (None: all), none under ``threshold``.

    The one sort of the package: ties keep the caller's order, so a rerank of equally good
    candidates is stable, whichever adapter asked.
    """
    top_n = check_count(top_n, what="top_n")
    threshold = check_score(threshold, what="threshold")
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    ranked = [RankedCandidate(index=i, score=float(scores[i])) for i in order]
    if threshold is not None:
        ranked = [candidate for candidate in ranked if candidate.score >= threshold]
    return ranked if top_n is None else ranked[:top_n]


def rerank(
    scorer: Encoder | Reranker,
    query: str,
    candidates: Sequence[str | None],
    *,
    top_n: int | None = None,
    threshold: float | None = None,
    task: TaskLike = TaskType.RERANKING,
    instruction: str | None = None,
    empty: EmptyCandidates = "error",
) -> list[RankedCandidate]:
    """Candidates by decreasing score; at most ``top_n``, none under ``threshold`` (see :func:`rank`)."""
    check_count(top_n, what="top_n")
    check_score(threshold, what="threshold")
    scores = score_candidates(scorer, query, candidates, task=task, instruction=instruction, empty=empty)
    return rank(scores, top_n=top_n, threshold=threshold)
