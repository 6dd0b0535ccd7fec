"""Lexical and hybrid queries: the collection's lexical index, Chroma's filters, and the one fusion.

- ``mode="lexical"``: the lexical index's best hits by BM25, kept only if Chroma holds them and they
  pass ``where`` / ``where_document`` (one ``collection.get`` of the hits' ids with the filters), in
  the index's order; when the filters leave too few, the index is searched deeper.
- ``mode="hybrid"``: the ``candidates`` best of each side, filtered alike (the dense side by Chroma's
  query, the lexical side as above, so that a hit failing a filter never appears), fused by
  :func:`qzhou_plugins.lexical.fuse` (``rrf`` or ``weighted``), the package's one fusion, which the
  command line and the evaluation use too. The lexical side runs in a worker thread while the query
  is embedded and Chroma searched, so a hybrid query costs little more than a dense one.

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
    return [
        QueryResult(query=query, hits=lexical_hits(collection, index, query, depth, where, where_document))
        for query in queries
    ]


def lexical_hits(
    collection: Collection,
    index: LexicalIndex,
    query: str,
    depth: int,
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
) -> list[Hit]:
    """The ``depth`` best hits of one query by BM25, searching deeper while the filters drop too many."""
    wanted = depth
    while True:
        found = index.search(query, wanted)
        kept = _stored_hits(collection, found, where, where_document)
        if len(kept) >= depth or len(found) < wanted:
            return kept[:depth]
        wanted *= 4


def _stored_hits(
    collection: Collection,
    found: Sequence[tuple[str, float]],
    where: Mapping[str, Any] | None,
    where_document: Mapping[str, Any] | None,
) -> list[Hit]:
    """``found`` as hits with their documents, leaving out ids Chroma lacks or the filters refuse."""
    if not found:
        return []
    stored = collection.get(
        ids=[id_ for id_, _ in found],
        where=dict(where) if where else None,
        where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
        include=["documents", "metadatas"],
    )
    documents = stored["documents"] or [None] * len(stored["ids"])
    metadatas = stored["metadatas"] or [None] * len(stored["ids"])
    rows = {id_: (d, m) for id_, d, m in zip(stored["ids"], documents, metadatas, strict=True)}
    return [
        Hit(id=id_, document=rows[id_][0] or "", metadata=dict(rows[id_][1] or {}), distance=None,
            score=score, lexical_score=score, sources=("lexical",))
        for id_, score in found
        if id_ in rows
    ]  # fmt: skip


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
    """Each query's dense and lexical candidates, fused; the best ``limit`` of each kept."""
    per_side = max(options.candidates, limit)
    lexical = _worker_pool().submit(
        lexical_results, collection, index, queries, per_side, where, where_document
    )
    try:
        dense = nearest(collection, embed_queries(queries), queries, per_side, where, where_document)
    finally:
        lexical_side = lexical.result()  # waited for even when the dense side failed: nothing left running
    return [
        fused(dense_result, lexical_result.hits, limit, options)
        for dense_result, lexical_result in zip(dense, lexical_side, strict=True)
    ]


def fused(dense: QueryResult, lexical: list[Hit], limit: int, options: SearchOptions) -> QueryResult:
    """One query's two sides fused by :func:`qzhou_plugins.lexical.fuse`, each hit keeping both scores."""
    by_id = {hit.id: hit for hit in lexical} | {hit.id: hit for hit in dense.hits}
    ranked = options.fuse(
        [(hit.id, hit.score) for hit in dense.hits], [(hit.id, hit.score) for hit in lexical], limit=limit
    )
    hits = [
        replace(by_id[one.id], score=one.score, dense_score=one.dense_score, lexical_score=one.lexical_score,
                fused_score=one.score, sources=one.sources)
        for one in ranked
    ]  # fmt: skip
    return QueryResult(query=dense.query, hits=hits)


def _worker_pool() -> ThreadPoolExecutor:
    """The threads that run lexical sides beside dense ones (SQLite, tantivy and Chroma release the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qzhou-lexical")
        return _pool
