"""A search from the page: its fields checked as ``qzhou-plugins query`` checks its flags, then the one
query path, :meth:`QZhouCollection.query` with a :class:`~qzhou_plugins.chroma.QueryOptions`.

Nothing here ranks: each hit's dense and lexical ranks and scores, its fused score and its rerank score
are what the collection's query returned (:class:`~qzhou_plugins.chroma.Hit`). What is added is what
explains a result: the query as the model saw it (the collection's recorded query prefix before it),
the terms the lexical side searched for, and where those terms are in each lexical hit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..cli.errors import UsageError
from ..lexical.fusion import DEFAULT_ALPHA, DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_MODE, DEFAULT_RRF_K
from ..validation import has_content, validate_text

DEFAULT_K = 5
"""Hits shown when the page does not say (``query``'s ``-k`` default)."""

DEFAULT_MAX_LENGTH = 512
"""The tokens a query is bounded by when its collection records no ``max_length`` (the longest query
the page takes is :func:`~qzhou_plugins.server.limits.character_limit` of it)."""

_WORD = re.compile(r"\w+(?:['’.]\w+)*")


def query_options(body: Mapping[str, Any]) -> Any:
    """The :class:`QueryOptions` of a search request, checked as ``query`` checks its flags (same words)."""
    from ..chroma import QueryOptions

    k = _integer(body, "k", DEFAULT_K)
    if k < 1:
        raise UsageError("-k must be at least 1")
    candidates = _integer(body, "rerank", None)
    if candidates is not None and candidates < k:
        raise UsageError(f"--rerank {candidates} must be at least -k ({k}): it is how many to rerank")
    reranker = _text(body, "rerank_model")
    if reranker is not None and candidates is None:
        raise UsageError("--rerank-model needs --rerank N: how many of the best chunks to rerank")
    return QueryOptions(
        n_results=k,
        mode=_text(body, "mode") or DEFAULT_MODE,
        fusion=_text(body, "fusion") or DEFAULT_FUSION,
        rrf_k=_number(body, "rrf_k", DEFAULT_RRF_K),
        alpha=_number(body, "alpha", DEFAULT_ALPHA),
        candidates=_integer(body, "candidates", DEFAULT_CANDIDATES),
        where=_filter(body, "where"),
        where_document=_filter(body, "where_document"),
        rerank_candidates=candidates,
        reranker=reranker,
    )


def query_text(body: Mapping[str, Any]) -> str:
    """The query, refused when empty or not encodable, in the words ``query`` uses."""
    text = body.get("q")
    if not isinstance(text, str) or not has_content(text):
        raise UsageError("the query text is empty (it has no visible character)")
    try:  # the rules every edge shares (a lone surrogate)
        validate_text(text, what="the query text")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return text


def check_length(text: str, collection: Any) -> None:
    """A query longer than the collection's model can read is refused before it is tokenised (413)."""
    from ..server.limits import check_text_lengths

    max_length = _recorded(collection).get("max_length") or DEFAULT_MAX_LENGTH
    check_text_lengths([text], "the query", max_length, one=True)


def search(collection: Any, text: str, options: Any) -> dict[str, Any]:
    """One query through the collection's own API, with what explains each hit."""
    from ..cli.collection import SCALES, scores_line

    (result,) = collection.query([text], options)
    prefix = _recorded(collection).get("query_prefix") or ""
    terms = lexical_terms(collection, text) if options.mode != "dense" else []
    hits = [_hit(collection, place, hit, terms, options) for place, hit in enumerate(result.hits, 1)]
    scale = result.hits[0].score_scale if result.hits else None
    return {
        "query": text,
        "mode": options.mode,
        "instructed_query": prefix + text if options.mode != "lexical" else None,
        "query_prefix": prefix,
        "lexical_terms": terms,
        "score_scale": scale,
        "scale_words": SCALES.get(scale or "", scale),
        "scores_line": scores_line(scale, options, collection) if scale else None,
        "hits": hits,
    }


def compare(collection: Any, text: str, options: Any) -> dict[str, Any]:
    """The same query in the three modes, side by side, each as that mode ranks it (no rerank); and,
    when ``options`` rerank, a fourth list: the search of ``options`` (its mode) reranked, so that
    what the reranker moved is seen beside what it was given."""
    from dataclasses import replace

    lists = {}
    for mode in ("dense", "lexical", "hybrid"):
        one = replace(options, mode=mode, rerank_candidates=None, reranker=None)
        lists[mode] = search(collection, text, one)
    if options.rerank_candidates is not None:
        lists["reranked"] = search(collection, text, options)
    return {"query": text, "lists": lists}


def lexical_terms(collection: Any, text: str) -> list[str]:
    """The terms the lexical side searches for: the query through the collection's analyzer."""
    from ..lexical.analyzers import analyzer

    return list(dict.fromkeys(analyzer(collection.analyzer)(text)))


def matched_spans(collection: Any, document: str, terms: list[str]) -> list[list[int]]:
    """Where the words of ``document`` that give one of ``terms`` are: [start, end) pairs to highlight."""
    from ..lexical.analyzers import analyzer

    analyze, wanted = analyzer(collection.analyzer), set(terms)
    if not wanted:
        return []
    return [[m.start(), m.end()] for m in _WORD.finditer(document) if wanted.intersection(analyze(m.group()))]


def _hit(collection: Any, place: int, hit: Any, terms: list[str], options: Any) -> dict[str, Any]:
    """One hit as the page shows it; the matched words are marked in the hits the lexical side found."""
    from ..documents import chunk_place

    reranked = options.rerank_candidates is not None
    return {
        "rank": place,
        "id": hit.id,
        "score": hit.score,
        "score_scale": hit.score_scale,
        "dense_rank": hit.dense_rank,
        "dense_score": hit.dense_score,
        "lexical_rank": hit.lexical_rank,
        "lexical_score": hit.lexical_score,
        "fused_score": hit.fused_score,
        "rerank_score": hit.score if reranked else None,
        "sources": list(hit.sources),
        "source": chunk_place(hit.metadata or {}, hit.id),
        "metadata": hit.metadata,
        "document": hit.document,
        "spans": matched_spans(collection, hit.document, terms) if hit.lexical_score is not None else [],
    }


def _recorded(collection: Any) -> dict[str, Any]:
    from ..integrations.chroma.fingerprint import recorded_config

    return recorded_config(collection.collection)


def _filter(body: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """A Chroma filter given as JSON text (or an object); malformed JSON named with its place."""
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise UsageError(
                f"{key}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                'a Chroma filter is an object such as {"source": "brewing.txt"}'
            ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f'{key} must be a JSON object (a Chroma filter such as {{"source": "x"}}), not {value!r}'
        )
    return value


def _integer(body: Mapping[str, Any], key: str, default: int | None) -> Any:
    value = body.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else value
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{key} must be a whole number, not {value!r}") from None


def _number(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key} must be a number, not {value!r}") from None


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be text, not {value!r}")
    return value.strip()
