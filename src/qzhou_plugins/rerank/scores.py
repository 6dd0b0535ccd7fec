"""Scores as numbers a ranking can trust: the embedding reranker's cosine, and the finiteness check.

Kept apart from the package's entry points so that the reranker and the one sort can both use them
without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backends.base import unit_rows

__all__ = ["check_finite", "cosine_scores"]


def cosine_scores(
    encoder: Any, queries: Sequence[str], documents: Sequence[str], prefixes: tuple[str, str]
) -> np.ndarray:
    """Cosine of each query (with the query prefix) and its document (with the document prefix).

    ``encoder`` is an :class:`~qzhou_plugins.Encoder` (the server's, on its queue, too). Distinct
    texts are embedded once, in one call, so the pairs of one query cost one query vector.
    """
    query_texts = list(dict.fromkeys(queries))
    document_texts = list(dict.fromkeys(documents))
    texts = query_texts + document_texts
    sides = [prefixes[0]] * len(query_texts) + [prefixes[1]] * len(document_texts)
    vectors = encoder.encode_with_prefix(texts, sides, what="candidates")
    if not encoder.facts.normalized:
        vectors = unit_rows(vectors)
    query_row = {text: row for row, text in enumerate(query_texts)}
    document_row = {text: len(query_texts) + row for row, text in enumerate(document_texts)}
    left = vectors[[query_row[q] for q in queries]]
    right = vectors[[document_row[d] for d in documents]]
    return np.einsum("ij,ij->i", left, right).astype(np.float32, copy=False)


def check_finite(scores: np.ndarray) -> np.ndarray:
    """``scores`` as they are when every one is finite; else a clear error naming the positions.

    A NaN compares false with every number, so a sort would put it anywhere: no ranking is made
    from one (:func:`score_candidates` checks its scores here, and so does a caller of
    ``score_pairs`` that scores many queries at once, as the evaluation does).
    """
    broken = np.flatnonzero(~np.isfinite(scores))
    if broken.size:
        raise FloatingPointError(
            f"the model gave no finite score for candidate(s) at position(s) "
            f"{', '.join(str(i) for i in broken[:10])}: its dtype overflowed (use dtype='float32' or "
            "'bfloat16'), or the checkpoint's weights are broken"
        )
    return scores
