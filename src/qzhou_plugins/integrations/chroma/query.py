"""Reading: Chroma's nearest neighbours as hits with a similarity, optionally reranked by any reranker.

This is the dense side of every query, and all of a query in the default ``mode="dense"``; the lexical
and hybrid modes (:mod:`.hybrid`) return the same :class:`Hit`, with what each side said of it.

The scores of a rerank come from :func:`qzhou_plugins.rerank.score_candidates` with the query's
reranker (the collection's own model, a cross-encoder or an LLM reranker: see :class:`.QueryOptions`)
and their order from :func:`qzhou_plugins.rerank.rank`, the one sort of the package, so a reranked
query orders and cuts candidates exactly as every other reranker of the package does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chromadb.api.models.Collection import Collection

from ...instructions import TaskLike
from ...rerank import rank, score_candidates
from ...rerank.reranker import Reranker
from ...validation import check_count

MAX_RESULTS = 2**32 - 1
"""The most results Chroma can be asked for (it converts ``n_results`` to an unsigned 32-bit int)."""


@dataclass(frozen=True)
class Hit:
    """One search result.

    ``score`` orders the hits: the cosine similarity (dense mode), the BM25 score (lexical mode), the
    fused score (hybrid mode), or the model's score when reranked. What each step said is kept:
    ``dense_score`` (the cosine), ``lexical_score`` (BM25) and ``fused_score``, each None where that
    step did not find or score the hit, and ``sources``, the side(s) that found it (``("dense",)``,
    ``("lexical",)`` or ``("dense", "lexical")``). ``distance`` is Chroma's (None for a hit that only
    the lexical side found).

    ``score_scale`` says what ``score`` is, so that a threshold is set on the right scale:
    ``"cosine"`` (dense), ``"bm25"`` (lexical), ``"rrf"`` or ``"weighted"`` (the hybrid fusion), or
    the reranker's scale when reranked: ``"cosine"`` (an embedding model), ``"probability"`` (a
    cross-encoder with a sigmoid, an LLM reranker) or ``"logit"`` (a cross-encoder saved without one).
    """

    id: str
    document: str
    metadata: dict[str, Any]
    distance: float | None
    score: float
    dense_score: float | None = None
    lexical_score: float | None = None
    fused_score: float | None = None
    sources: tuple[str, ...] = ("dense",)
    score_scale: str = "cosine"
    dense_rank: int | None = None
    lexical_rank: int | None = None


@dataclass(frozen=True)
class QueryResult:
    query: str
    hits: list[Hit] = field(default_factory=list)


def positive_count(value: Any, what: str) -> int:
    """A count of results: a positive int that Chroma can take (not a bool, a float or 2**64).

    :func:`~qzhou_plugins.validation.check_count` decides what a count is; this adds Chroma's upper
    bound and keeps the one error (a ValueError, "must be a positive integer") that ``query`` has
    always raised for any bad count, which callers and tests match.
    """
    try:
        counted = check_count(value, what=what, allow_none=False, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, not {type(value).__name__} {value!r}") from None
    assert counted is not None
    if counted > MAX_RESULTS:
        raise ValueError(f"{what} must be at most {MAX_RESULTS} (the most Chroma can return), not {counted}")
    return counted


def nearest(
    collection: Collection,
    vectors: Any,
    queries: list[str],
    n_results: int,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
    *,
    with_documents: bool = True,
) -> list[QueryResult]:
    """The ``n_results`` nearest records of each query vector, as hits with a cosine ``score``.

    ``with_documents=False`` leaves the documents and metadata out (empty in the hits): a hybrid query
    fetches them for the fused hits it keeps only.
    """
    include = ["documents", "metadatas", "distances"] if with_documents else ["distances"]
    raw = collection.query(
        query_embeddings=vectors,
        n_results=n_results,
        where=dict(where) if where else None,
        where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
        include=include,  # type: ignore[arg-type]
    )
    space = _space(collection)
    results = []
    for position, query in enumerate(queries):
        ids = raw["ids"][position]
        rows = zip(
            ids,
            raw["documents"][position] if raw["documents"] else [None] * len(ids),
            raw["metadatas"][position] if raw["metadatas"] else [None] * len(ids),
            (raw["distances"] or [[]])[position],
            strict=True,
        )
        hits = [
            Hit(id=id_, document=document or "", metadata=dict(metadata or {}), distance=float(distance),
                score=(similarity := _similarity(space, float(distance))), dense_score=similarity,
                dense_rank=place)
            for place, (id_, document, metadata, distance) in enumerate(rows, 1)
        ]  # fmt: skip
        results.append(QueryResult(query=query, hits=hits))
    return results


def reranked(
    reranker: Reranker, result: QueryResult, n_results: int, task: TaskLike, instruction: str | None
) -> QueryResult:
    """The best ``n_results`` hits by ``reranker``'s score, which becomes their ``score`` (and its scale
    their ``score_scale``); what the search said of each hit (dense, lexical, fused) is kept."""
    if not result.hits:
        return result
    documents: Sequence[str] = [hit.document for hit in result.hits]
    scores = score_candidates(
        reranker, result.query, documents, task=task, instruction=instruction, empty="lowest"
    )
    scale = reranker.score_scale
    hits = [
        replace(result.hits[ranked.index], score=ranked.score, score_scale=scale)
        for ranked in rank(scores, top_n=n_results)
    ]
    return QueryResult(query=result.query, hits=hits)


def _space(collection: Collection) -> str:
    configuration = collection.configuration_json
    for index in ("hnsw", "spann"):
        if configuration.get(index) and configuration[index].get("space"):
            return str(configuration[index]["space"])
    return str((collection.metadata or {}).get("hnsw:space", "l2"))


def _similarity(space: str, distance: float) -> float:
    """Cosine similarity from Chroma's distance (l2 is squared, which on unit vectors is 2 - 2 cos)."""
    return 1.0 - distance / 2.0 if space == "l2" else 1.0 - distance
