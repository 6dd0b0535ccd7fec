"""Each judged query's figures in a run: what an evaluation keeps besides the means.

A mean hides which queries a change helped or hurt; the figures of each query (nDCG@10, recall@100)
and its first results (id, judged relevance, the start of the text) are kept in the result, so that
two runs' JSON files can be compared query by query (``qzhou-plugins inspect`` plots them) and the
worst queries read without the corpus at hand.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..rerank import rank
from .datasets import RetrievalDataset
from .metrics import query_metrics
from .results import FirstResult, QueryFigures

FIRST_RESULTS = 3
"""Results kept per query: enough to see what was found instead of the relevant documents."""

EXCERPT_CHARACTERS = 160


def query_figures(
    dataset: RetrievalDataset, run: Mapping[str, Mapping[str, float]]
) -> dict[str, QueryFigures]:
    """Query id -> its figures in ``run`` and its first results, for every judged query."""
    figures = {}
    for query_id, values in query_metrics(dataset.qrels, run).items():
        scores = run.get(query_id, {})
        ids = list(scores)
        first = [ids[hit.index] for hit in rank([scores[i] for i in ids], top_n=FIRST_RESULTS)]
        judged = dataset.qrels.get(query_id, {})
        figures[query_id] = QueryFigures(
            query=dataset.queries.get(query_id, ""),
            ndcg_at_10=values["ndcg_at_10"],
            recall_at_100=values["recall_at_100"],
            first=[_first(dataset, doc_id, judged) for doc_id in first],
        )
    return figures


def _first(dataset: RetrievalDataset, doc_id: str, judged: Mapping[str, int]) -> FirstResult:
    return FirstResult(id=doc_id, relevance=int(judged.get(doc_id, 0)), excerpt=_excerpt(dataset, doc_id))


def _excerpt(dataset: RetrievalDataset, doc_id: str) -> str:
    text = " ".join(dataset.corpus.get(doc_id, "").split())
    return text if len(text) <= EXCERPT_CHARACTERS else text[: EXCERPT_CHARACTERS - 1].rstrip() + "…"
