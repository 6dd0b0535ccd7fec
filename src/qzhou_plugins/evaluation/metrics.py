"""The measures, computed the way MTEB computes them: trec_eval through ``pytrec_eval``, exact search.

Our own arithmetic would be one more thing to trust; ``pytrec_eval`` is what MTEB itself calls, so
a score here means what the leaderboard's means, ties and cut-offs included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..rerank import rank, unit_rows

RETRIEVAL_DEPTH = 1000
"""Documents kept per query in a retrieval run, as MTEB keeps."""

_QUERY_BLOCK = 256
"""Queries scored against the whole corpus at once: bounds the score matrix to 256 x corpus floats."""


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Mean nDCG@10, MRR@10, MAP@1000, recall@10 and recall@100 of ``run`` over the judged queries.

    Computed by trec_eval (``pytrec_eval``). A judged query absent from the run scores 0 on every
    metric. trec_eval breaks score ties by document id (descending), as in MTEB.
    """
    per_query = query_metrics(qrels, run)
    totals = dict.fromkeys([*_TREC_NAMES, "mrr_at_10"], 0.0)
    for values in per_query.values():
        for name in totals:
            totals[name] += values[name]
    return {name: total / len(qrels) for name, total in totals.items()}


_TREC_NAMES = {
    "ndcg_at_10": "ndcg_cut_10",
    "map_at_1000": "map_cut_1000",
    "recall_at_10": "recall_10",
    "recall_at_100": "recall_100",
}


def query_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Each judged query's nDCG@10, MRR@10, MAP@1000, recall@10 and recall@100 (what
    :func:`retrieval_metrics` averages), so that two runs can be compared query by query.

    A judged query that trec_eval leaves out (no document in the run) scores 0 on every metric.
    """
    import pytrec_eval

    judged = {query_id: dict(judgements) for query_id, judgements in qrels.items()}
    scored = {query_id: {d: float(s) for d, s in run.get(query_id, {}).items()} for query_id in judged}
    measures = {"ndcg_cut.10", "recall.10", "recall.100", "map_cut.1000", "recip_rank"}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(scored)
    found = {
        query_id: {
            **{ours: float(values[theirs]) for ours, theirs in _TREC_NAMES.items()},
            "mrr_at_10": _reciprocal_rank_at_10(values["recip_rank"]),
        }
        for query_id, values in per_query.items()
    }
    zero = {**dict.fromkeys(_TREC_NAMES, 0.0), "mrr_at_10": 0.0}
    return found | {query_id: dict(zero) for query_id in judged if query_id not in found}


def rerank_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Mean MAP and MRR@10 of ``run`` over the judged queries (trec_eval, as MTEB's reranking)."""
    import pytrec_eval

    judged = {query_id: dict(judgements) for query_id, judgements in qrels.items()}
    scored = {query_id: dict(run.get(query_id, {})) for query_id in judged}
    per_query = pytrec_eval.RelevanceEvaluator(judged, {"map", "recip_rank"}).evaluate(scored)
    total_map = sum(values["map"] for values in per_query.values())
    total_mrr = sum(_reciprocal_rank_at_10(values["recip_rank"]) for values in per_query.values())
    return {"map": total_map / len(judged), "mrr_at_10": total_mrr / len(judged)}


def _reciprocal_rank_at_10(reciprocal_rank: float) -> float:
    """MRR@10 from trec_eval's uncut reciprocal rank: a first hit below rank 10 counts 0.

    The same as ``recip_rank`` on a run cut to 10, with trec_eval's own tie order.
    """
    return reciprocal_rank if reciprocal_rank >= 0.1 - 1e-12 else 0.0


def exact_search(
    query_vectors: np.ndarray,
    document_vectors: np.ndarray,
    query_ids: Sequence[str],
    document_ids: Sequence[str],
    *,
    depth: int = RETRIEVAL_DEPTH,
    ignore_identical_ids: bool = True,
) -> dict[str, dict[str, float]]:
    """The ``depth`` most similar documents of each query by cosine, as a trec_eval run.

    ``ignore_identical_ids`` drops a document whose id is the query's own id, as MTEB does: in sets
    where queries are also documents (Quora, ArguAna) the query would otherwise retrieve itself.
    The ``depth`` best of each row are selected by numpy (a partition, not a sort of the corpus) and
    put in order by :func:`qzhou_plugins.rerank.rank`, the package's one sort (stable on ties).
    """
    queries = unit_rows(np.asarray(query_vectors, dtype=np.float32))
    documents = unit_rows(np.asarray(document_vectors, dtype=np.float32))
    keep = min(depth, len(document_ids))
    position = {doc_id: i for i, doc_id in enumerate(document_ids)} if ignore_identical_ids else {}
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(query_ids), _QUERY_BLOCK):
        block_ids = query_ids[start : start + _QUERY_BLOCK]
        scores = queries[start : start + len(block_ids)] @ documents.T
        for row, query_id in enumerate(block_ids):
            if query_id in position:
                scores[row, position[query_id]] = -np.inf
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        for row, query_id in enumerate(block_ids):
            ranked = rank(scores[row, top[row]])
            run[query_id] = {
                document_ids[top[row][hit.index]]: hit.score for hit in ranked if math.isfinite(hit.score)
            }
    return run
