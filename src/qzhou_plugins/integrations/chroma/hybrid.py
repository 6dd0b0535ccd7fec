"""Lexical and hybrid queries: the collection's lexical index, Chroma's filters, and the one fusion.

- ``mode="lexical"``: the lexical index's best hits by BM25 that pass ``where`` / ``where_document``
  (one ``collection.get`` of the hits' ids with the filters), in the index's order; when the filters
  leave too few, the index is searched deeper.
- ``mode="hybrid"``: the ``candidates`` best of each side, filtered alike (the dense side by Chroma's
  query, the lexical side as above, so that a hit failing a filter never appears), fused by
  :func:`qzhou_plugins.lexical.fuse` (``rrf`` or ``weighted``), the package's one fusion, which the
  command line and the evaluation use too.

Both sides rank ids and scores only; the documents and metadata are fetched once, for the hits kept
(an id that Chroma no longer holds is left out there). The lexical side runs in a worker thread while
the query is embedded and Chroma searched, so a hybrid query costs little more than a dense one.

A query with no searchable term (only stopwords, punctuation, emoji) gets no lexical hit, and a hybrid
query then returns the dense ranking.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
from chromadb.api.models.Collection import Collection

from ...lexical.base import LexicalIndex
from ...lexical.fusion import SearchOptions
from ...validation import validate_texts
from .query import Hit, QueryResult, nearest

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def search(
    collection: Collection,
    embed: Callable[[list[str]], np.ndarray],
    lexical_index: Callable[[], LexicalIndex],
    queries: list[str],
    limit: int,
    filters: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None],
    options: SearchOptions,
) -> list[QueryResult]:
    """The best ``limit`` hits of each query in the mode ``options`` say (dense: Chroma alone).

    ``embed`` gives the query-side vectors (validating the texts), ``lexical_index`` the collection's
    lexical index (built on first use), ``filters`` is (``where``, ``where_document``).
    """
    where, where_document = filters
    if options.mode == "dense":
        return nearest(collection, embed(queries), queries, limit, where, where_document)
    queries = validate_texts(queries, what="queries")  # before the lexical side reads them
    index = lexical_index()
    if options.mode == "lexical":
        return lexical_results(collection, index, queries, limit, where, where_document)
    return hybrid_results(collection, index, embed, queries, limit, where, where_document, options)


def lexical_results(
    collection: Collection,
    index: LexicalIndex,
    queries: list[str],
    depth: int,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
) -> list[QueryResult]:
    """The ``depth`` best lexical hits of each query that Chroma holds and the filters keep."""
    results = []
    for query in queries:
        ranking = lexical_ranking(collection, index, query, depth, where, where_document)
        hits = [Hit(id=id_, document="", metadata={}, distance=None, score=score, lexical_score=score,
                    sources=("lexical",), score_scale="bm25", lexical_rank=place)
                for place, (id_, score) in enumerate(ranking, 1)]  # fmt: skip
        results.append(QueryResult(query=query, hits=with_documents(collection, hits, depth)))
    return results


def lexical_ranking(
    collection: Collection,
    index: LexicalIndex,
    query: str,
    depth: int,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
) -> list[tuple[str, float]]:
    """The ``depth`` best (id, BM25 score) pairs of one query whose records pass the filters.

    With filters, the index is searched deeper while they leave too few.
    """
    wanted = depth
    while True:
        found = index.search(query, wanted)
        kept = _passing(collection, found, where, where_document)
        if len(kept) >= depth or len(found) < wanted:
            return kept[:depth]
        wanted *= 4


def _passing(
    collection: Collection,
    found: Sequence[tuple[str, float]],
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
) -> list[tuple[str, float]]:
    """The pairs of ``found`` whose records pass the filters (one ``get`` of their ids), in order."""
    if not found or not (where or where_document):
        return [(id_, score) for id_, score in found]
    passed = set(
        collection.get(
            ids=[id_ for id_, _ in found],
            where=dict(where) if where else None,
            where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
            include=[],
        )["ids"]
    )
    return [(id_, score) for id_, score in found if id_ in passed]


def hybrid_results(
    collection: Collection,
    index: LexicalIndex,
    embed_queries: Callable[[list[str]], np.ndarray],
    queries: list[str],
    limit: int,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
    options: SearchOptions,
) -> list[QueryResult]:
    """Each query's dense and lexical candidates, fused; the best ``limit`` of each kept.

    Both sides rank ids and scores only; the documents and metadata are fetched for the hits kept.
    """
    per_side = max(options.candidates, limit)
    lexical = _worker_pool().submit(
        lambda: [lexical_ranking(collection, index, q, per_side, where, where_document) for q in queries]
    )
    try:
        dense = nearest(
            collection, embed_queries(queries), queries, per_side, where, where_document, with_documents=False
        )
    finally:
        rankings = lexical.result()  # waited for even when the dense side failed: nothing left running
    return [
        QueryResult(
            query=result.query, hits=with_documents(collection, fused(result, ranking, options), limit)
        )
        for result, ranking in zip(dense, rankings, strict=True)
    ]


def fused(dense: QueryResult, lexical: list[tuple[str, float]], options: SearchOptions) -> list[Hit]:
    """One query's two sides fused by :func:`qzhou_plugins.lexical.fuse`, each hit keeping both scores."""
    distances = {hit.id: hit.distance for hit in dense.hits}
    return [
        Hit(id=one.id, document="", metadata={}, distance=distances.get(one.id), score=one.score,
            dense_score=one.dense_score, lexical_score=one.lexical_score, fused_score=one.score,
            sources=one.sources, score_scale=options.fusion, dense_rank=one.dense_rank,
            lexical_rank=one.lexical_rank)
        for one in options.fuse([(hit.id, hit.score) for hit in dense.hits], lexical)
    ]  # fmt: skip


def with_documents(collection: Collection, hits: list[Hit], limit: int) -> list[Hit]:
    """The first ``limit`` of ``hits`` that Chroma holds, with their documents and metadata.

    An id the lexical index holds and Chroma does not (written by plain Chroma code since the last
    repair) is left out, and the next hit takes its place.
    """
    kept: list[Hit] = []
    start = 0
    while len(kept) < limit and start < len(hits):
        chunk = hits[start : start + limit - len(kept)]
        stored = collection.get(ids=[hit.id for hit in chunk], include=["documents", "metadatas"])
        documents = stored["documents"] or [None] * len(stored["ids"])
        metadatas = stored["metadatas"] or [None] * len(stored["ids"])
        rows = {id_: (d, m) for id_, d, m in zip(stored["ids"], documents, metadatas, strict=True)}
        kept += [replace(hit, document=rows[hit.id][0] or "", metadata=dict(rows[hit.id][1] or {}))
                 for hit in chunk if hit.id in rows]  # fmt: skip
        start += len(chunk)
    return kept


def _worker_pool() -> ThreadPoolExecutor:
    """The threads that run lexical sides beside dense ones (SQLite, tantivy and Chroma release the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qzhou-lexical")
        return _pool
