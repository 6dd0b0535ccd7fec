"""The second stage of a retrieval evaluation: a reranker reorders each query's first-stage best.

This is the BEIR protocol for rerankers: a first stage (dense, lexical or hybrid) retrieves, a
reranker scores each judged query against its ``depth`` best documents, and the metrics are
reported before and after, so that what the reranker adds is one subtraction on the same
candidates. The pairs of many queries go to the reranker in one call (:meth:`Reranker.score_pairs`),
so its token-budget batches fill up as they do for a served batch, and each query's candidates are
put in order by :func:`qzhou_plugins.rerank.rank`, the package's one sort: what is measured is what
:func:`qzhou_plugins.rerank.rerank` gives a user on the same candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

from ..instructions import TaskLike, resolve_task
from ..rerank import as_reranker, check_finite, rank
from ..validation import check_count, validate_text
from .datasets import RetrievalDataset
from .hybrid import Run

DEFAULT_RERANK_DEPTH = 100
"""Candidates reranked per query when none is said: BEIR's top 100, the depth its reranker
results are published at (and what recall@100 measures the first stage on)."""

_QUERY_CHUNK = 64
"""Queries whose pairs are scored in one call: enough pairs (64 x depth) for the token-budget
batching to fill its batches, few enough that a progress bar moves."""


def rerank_depth(reranker: Any, depth: int | None) -> int | None:
    """The depth to rerank at: ``depth`` (a positive count) with a reranker, None without one.

    A depth without a reranker would be silently ignored, so it is refused.
    """
    if reranker is None:
        if depth is not None:
            raise ValueError(
                f"rerank_depth={depth!r} without a reranker: give reranker= too, or leave it out"
            )
        return None
    if depth is None:
        return DEFAULT_RERANK_DEPTH
    return check_count(depth, what="rerank_depth", allow_none=False, minimum=1)


def describe_reranker(scorer: Any, task: TaskLike) -> dict[str, str]:
    """What a result records of the reranker: its model, its kind, the scale of its scores and the
    task whose instruction it was given (a cross-encoder takes none).

    An :class:`~qzhou_plugins.Encoder` given as the reranker is its embedding reranker (a cosine).
    """
    if hasattr(scorer, "kind") and hasattr(scorer, "score_scale"):
        kind, scale = scorer.kind, scorer.score_scale
    else:
        kind, scale = "embedding", "cosine"
    instructed = resolve_task(task).name if kind != "cross-encoder" else "none"
    return {"model": scorer.model_name, "kind": kind, "score_scale": scale, "task": instructed}


def reranked_run(
    scorer: Any,
    dataset: RetrievalDataset,
    run: Mapping[str, Mapping[str, float]],
    depth: int,
    *,
    task: TaskLike,
    show_progress: bool = False,
) -> tuple[Run, int]:
    """``run`` with each query's ``depth`` best documents reordered by ``scorer``; and the pairs scored.

    The documents below ``depth`` follow the reranked ones in their first-stage order, so that
    recall@100 and MAP stay defined at any depth. The scores handed to trec_eval are the positions
    (the first document highest): trec_eval breaks score ties by document id, while :func:`rank`
    keeps the first-stage order of equally scored candidates, and the order is what is measured.
    """
    reranker = as_reranker(scorer)
    judged = [query_id for query_id in dataset.queries if run.get(query_id)]  # a query with no hit stays 0
    orders = {query_id: _first_stage_order(run[query_id]) for query_id in judged}
    query_ids = list(orders)
    reranked: Run = {}
    pairs = 0
    with tqdm(total=len(query_ids), desc="Reranking", unit="query", disable=not show_progress) as bar:
        for start in range(0, len(query_ids), _QUERY_CHUNK):
            chunk = {query_id: orders[query_id] for query_id in query_ids[start : start + _QUERY_CHUNK]}
            pairs += _rerank_chunk(reranker, dataset, chunk, depth, task, reranked)
            bar.update(len(chunk))
    return reranked, pairs


def _rerank_chunk(
    reranker: Any,
    dataset: RetrievalDataset,
    orders: dict[str, list[str]],
    depth: int,
    task: TaskLike,
    out: Run,
) -> int:
    """Rerank the queries of ``orders`` (id -> first-stage order) with one call, into ``out``; the pairs."""
    queries: list[str] = []
    documents: list[str] = []
    for query_id, order in orders.items():
        queries += [_checked(dataset.queries, query_id, "query")] * len(order[:depth])
        documents += [_checked(dataset.corpus, doc_id, "document") for doc_id in order[:depth]]
    scores = check_finite(
        reranker.score_pairs(queries, documents, task=task, instruction=None, show_progress=False)
    )
    offset = 0
    for query_id, order in orders.items():
        head = order[:depth]
        ranked = rank(scores[offset : offset + len(head)])
        offset += len(head)
        reordered = [head[hit.index] for hit in ranked] + order[depth:]
        out[query_id] = {doc_id: float(len(reordered) - place) for place, doc_id in enumerate(reordered)}
    return len(documents)


def _first_stage_order(scores: Mapping[str, float]) -> list[str]:
    """A query's documents best first, as the first stage ranked them (its own order on ties)."""
    ids = list(scores)
    return [ids[hit.index] for hit in rank([scores[doc_id] for doc_id in ids])]


def _checked(texts: Mapping[str, str], text_id: str, what: str) -> str:
    """``texts[text_id]``, checked as every text a model reads is (a lexical first stage read it without
    a check); a bad one is named by its id."""
    return validate_text(texts[text_id], what=f"{what} {text_id!r}")
