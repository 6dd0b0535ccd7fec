"""The lexical and hybrid runs of a retrieval evaluation, made by the code a collection uses.

The lexical side is a real lexical index (:func:`qzhou_plugins.lexical.open_index`, in a temporary
folder) filled by :func:`qzhou_plugins.lexical.repair`, the very call that builds a collection's index
from its documents, and searched as a collection searches it; the hybrid run fuses each query's best
``candidates`` of the dense and the lexical runs with :meth:`SearchOptions.fuse`, the one fusion of the
package. So the figures are those of ``QZhouCollection.query(mode=...)`` over the same corpus, apart
from Chroma's approximate nearest neighbours (the dense run is exact).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping

from tqdm.auto import tqdm

from ..lexical.fusion import SearchOptions
from ..lexical.opening import open_index
from ..lexical.repairing import repair
from .datasets import RetrievalDataset

Run = dict[str, dict[str, float]]
"""A trec_eval run: query id -> document id -> score (higher is better)."""


def lexical_run(
    dataset: RetrievalDataset,
    depth: int,
    *,
    engine: str | None = None,
    analyzer: str | None = None,
    ignore_identical_ids: bool = True,
    show_progress: bool = False,
) -> Run:
    """The ``depth`` best documents of each judged query by BM25 (``engine`` and ``analyzer`` as a
    collection's lexical index takes them; None: the defaults)."""
    corpus = dataset.corpus
    run: Run = {}
    with (
        tempfile.TemporaryDirectory(prefix="qzhou-eval-lexical-") as folder,
        open_index(folder, engine=engine, analyzer=analyzer) as index,
    ):
        texts_of = lambda ids: {id_: corpus[id_] for id_ in ids}  # noqa: E731
        repair(
            index, len(corpus), lambda: list(corpus), texts_of, batch_size=5000, show_progress=show_progress
        )
        queries = tqdm(dataset.queries.items(), desc="Searching", unit="query", disable=not show_progress)
        for query_id, query in queries:
            hits = index.search(query, depth + 1)  # one more, for a query that finds itself
            kept = [hit for hit in hits if not (ignore_identical_ids and hit.id == query_id)]
            run[query_id] = {hit.id: hit.score for hit in kept[:depth]}
    return run


def fused_run(dense: Run, lexical: Run, options: SearchOptions) -> Run:
    """Each query's best ``options.candidates`` of both runs, fused as a hybrid query fuses them.

    The scores handed to trec_eval are the fused order's (the first hit highest): trec_eval breaks
    ties by document id, and RRF gives many ties (two ids each found at rank 3 by one side), which
    the fusion breaks by the sides' ranks.
    """
    run: Run = {}
    for query_id in dense.keys() | lexical.keys():
        fused = options.fuse(_best(dense.get(query_id, {}), options.candidates),
                             _best(lexical.get(query_id, {}), options.candidates))  # fmt: skip
        run[query_id] = {hit.id: float(len(fused) - position) for position, hit in enumerate(fused)}
    return run


def _best(scores: Mapping[str, float], count: int) -> list[tuple[str, float]]:
    """The ``count`` best (id, score) pairs, best first (stable: equal scores keep the run's order)."""
    return sorted(scores.items(), key=lambda pair: -pair[1])[:count]
