"""What the LangChain and LlamaIndex retrievers share: their options, checked once, and the query.

Both retrievers are thin: they hold a :class:`~qzhou_plugins.chroma.QZhouCollection` and the options of
its :meth:`~qzhou_plugins.chroma.QZhouCollection.query` (mode, fusion, filters, the rerank: how many,
by which reranker, for which task and with which instruction),
and turn its hits into their framework's documents. The options are checked by the collection's own
:class:`~qzhou_plugins.chroma.QueryOptions`, the same way for both, when a retriever is made (so a
typo or an unknown reranker fails at construction, not at the first question), and again per call
with what a call overrides. Chroma is imported only when a retriever is given a collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..instructions import TaskType
from ..lexical.fusion import DEFAULT_ALPHA, DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_RRF_K
from ..validation import check_count

DEFAULT_RETRIEVER_MODE = "hybrid"
"""The retrievers rank by both sides unless told otherwise: what plain vector-store retrievers lack."""

SEARCH_FIELDS = ("mode", "fusion", "candidates", "rrf_k", "alpha")
QUERY_FIELDS = (
    *SEARCH_FIELDS,
    "where",
    "where_document",
    "rerank_candidates",
    "reranker",
    "rerank_task",
    "rerank_instruction",
)
"""The options of ``QZhouCollection.query`` a retriever holds (besides the number of results)."""

SCORE_KEYS = (
    "relevance_score",
    "relevance_score_scale",
    "dense_score",
    "lexical_score",
    "fused_score",
    "sources",
)
"""Metadata keys a retrieved document carries besides its own: what each side said of it."""

DEFAULTS: dict[str, Any] = {
    "mode": DEFAULT_RETRIEVER_MODE,
    "fusion": DEFAULT_FUSION,
    "candidates": DEFAULT_CANDIDATES,
    "rrf_k": DEFAULT_RRF_K,
    "alpha": DEFAULT_ALPHA,
    "where": None,
    "where_document": None,
    "rerank_candidates": None,
    "reranker": None,
    "rerank_task": TaskType.RERANKING.value,
    "rerank_instruction": None,
}


def checked_collection(collection: Any) -> Any:
    """``collection`` if it is a QZhouCollection (a raw Chroma collection has no lexical side)."""
    from ..chroma import QZhouCollection

    if not isinstance(collection, QZhouCollection):
        raise TypeError(
            "collection must be a qzhou_plugins.chroma.QZhouCollection (QZhouCollection.open(name, ...)), "
            f"not {type(collection).__name__}"
        )
    return collection


def checked_options(options: Mapping[str, Any], count_name: str) -> dict[str, Any]:
    """The query options of a retriever or a call, each checked; ``count_name`` is the count's name."""
    unknown = sorted(set(options) - {*QUERY_FIELDS, count_name})
    if unknown:
        known = ", ".join((count_name, *QUERY_FIELDS))
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; a retriever takes {known}")
    count = options.get(count_name)
    if count is not None:
        try:
            check_count(count, what=count_name, allow_none=False, minimum=1)
        except (TypeError, ValueError):
            raise ValueError(f"{count_name} must be a positive integer, not {count!r}") from None
    query_options(options)
    return dict(options)


def query_options(options: Mapping[str, Any], count: int = 1) -> Any:
    """The collection's :class:`~qzhou_plugins.chroma.QueryOptions` of ``options`` and ``count`` results."""
    from ..chroma import QueryOptions

    return QueryOptions(n_results=count, **{key: options.get(key, DEFAULTS[key]) for key in QUERY_FIELDS})


def retrieve(collection: Any, query: str, count: int, options: Mapping[str, Any]) -> list[Any]:
    """The hits of ``query``: ``collection.query`` with ``count`` results and ``options``."""
    return collection.query(query, query_options(options, count))[0].hits


def score_metadata(hit: Any) -> dict[str, Any]:
    """What the sides said of ``hit``, as metadata: its final score and that score's scale, each
    side's score and which side(s)."""
    said = {
        "relevance_score": hit.score,
        "dense_score": hit.dense_score,
        "lexical_score": hit.lexical_score,
        "fused_score": hit.fused_score,
    }
    kept = {key: value for key, value in said.items() if value is not None}
    return {**kept, "relevance_score_scale": hit.score_scale, "sources": list(hit.sources)}
