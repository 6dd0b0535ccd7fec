"""Reranking with the embedding model already in memory.

A bi-encoder reranker scores each candidate by the cosine between the instructed query and the
candidate, in one forward pass over both. It needs no second (cross-encoder) model, and it is what
QZhou was evaluated with on the MTEB reranking tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .backends.base import unit_rows
from .encoder import Encoder
from .instructions import TaskLike, TaskType
from .validation import as_list, check_count, check_score, has_content, validate_text, validate_texts

LOWEST_SCORE = -1.0
"""The score given to an empty candidate: no cosine can be lower."""

EmptyCandidates = Literal["error", "lowest"]
EMPTY_MODES: tuple[str, ...] = ("error", "lowest")

__all__ = ["LOWEST_SCORE", "RankedCandidate", "rank", "rerank", "score_candidates", "unit_rows"]


@dataclass(frozen=True)
class RankedCandidate:
    """A candidate's place in the caller's list and its relevance to the query (a cosine)."""

    index: int
    score: float


def score_candidates(
    encoder: Encoder,
    query: str,
    candidates: Sequence[str | None],
    *,
    task: TaskLike = TaskType.RERANKING,
    empty: EmptyCandidates = "error",
) -> np.ndarray:
    """Cosine of the query (query side of ``task``) with each candidate (document side), in order.

    ``empty="lowest"`` scores blank or missing candidates :data:`LOWEST_SCORE` instead of raising:
    a chain that reranks whatever a retriever returned should not fail on one empty page.
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
    scores = np.full(len(candidates), LOWEST_SCORE, dtype=np.float32)
    if not filled:
        return scores
    query_prefix, document_prefix = encoder.prefixes(task)
    texts = [query] + [str(candidates[i]) for i in filled]
    vectors = encoder.encode_with_prefix(texts, [query_prefix] + [document_prefix] * len(filled))
    if not encoder.facts.normalized:
        vectors = unit_rows(vectors)
    scores[filled] = vectors[1:] @ vectors[0]
    return scores


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
    encoder: Encoder,
    query: str,
    candidates: Sequence[str | None],
    *,
    top_n: int | None = None,
    threshold: float | None = None,
    task: TaskLike = TaskType.RERANKING,
    empty: EmptyCandidates = "error",
) -> list[RankedCandidate]:
    """Candidates by decreasing score; at most ``top_n``, none under ``threshold`` (see :func:`rank`)."""
    check_count(top_n, what="top_n")
    check_score(threshold, what="threshold")
    scores = score_candidates(encoder, query, candidates, task=task, empty=empty)
    return rank(scores, top_n=top_n, threshold=threshold)
