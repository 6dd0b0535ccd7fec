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

from .encoder import Encoder, validate_texts
from .instructions import TaskLike, TaskType

LOWEST_SCORE = -1.0
"""The score given to an empty candidate: no cosine can be lower."""


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
    empty: Literal["error", "lowest"] = "error",
) -> np.ndarray:
    """Cosine of the query (query side of ``task``) with each candidate (document side), in order.

    ``empty="lowest"`` scores blank or missing candidates :data:`LOWEST_SCORE` instead of raising:
    a chain that reranks whatever a retriever returned should not fail on one empty page.
    """
    validate_texts([query], what="query")
    if empty == "lowest":
        filled = [i for i, text in enumerate(candidates) if isinstance(text, str) and text.strip()]
    else:
        validate_texts(candidates, what="candidates")
        filled = list(range(len(candidates)))
    scores = np.full(len(candidates), LOWEST_SCORE, dtype=np.float32)
    if not filled:
        return scores
    query_prefix, document_prefix = encoder.prefixes(task)
    texts = [query_prefix + query] + [document_prefix + str(candidates[i]) for i in filled]
    vectors = encoder.encode_prefixed(texts)
    if not encoder.config.normalize:
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    scores[filled] = vectors[1:] @ vectors[0]
    return scores


def rerank(
    encoder: Encoder,
    query: str,
    candidates: Sequence[str | None],
    *,
    top_n: int | None = None,
    threshold: float | None = None,
    task: TaskLike = TaskType.RERANKING,
    empty: Literal["error", "lowest"] = "error",
) -> list[RankedCandidate]:
    """Candidates by decreasing score; at most ``top_n``, none under ``threshold``.

    Ties keep the caller's order, so a rerank of equally good candidates is stable.
    """
    if top_n is not None and top_n < 0:
        raise ValueError(f"top_n must be a positive number or None, not {top_n}")
    scores = score_candidates(encoder, query, candidates, task=task, empty=empty)
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    ranked = [RankedCandidate(index=i, score=float(scores[i])) for i in order]
    if threshold is not None:
        ranked = [candidate for candidate in ranked if candidate.score >= threshold]
    return ranked if top_n is None else ranked[:top_n]
