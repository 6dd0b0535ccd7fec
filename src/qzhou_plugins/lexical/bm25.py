"""The one BM25 of the package, and why the two engines compute it the way they do.

Every index ranks with Lucene's BM25 (the one of Elasticsearch, tantivy, Anserini and BEIR's
baselines)::

    score(d, q) = sum over query terms t (with their count in q) of
                  idf(t) * (k1 + 1) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * len(d) / avgdl))
    idf(t)      = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

with N the documents in the index, n(t) those that hold t, len(d) the number of terms of d after
analysis and avgdl the mean of len over the index. Defaults: k1 = 1.2, b = 0.75.

Neither engine's built-in ranking is that formula with configurable parameters:

- FTS5's ``bm25()`` hard-codes k1 = 1.2 and b = 0.75 and uses another idf, ``ln((N - n + 0.5) /
  (n + 0.5))`` floored at 1e-6, which gives every term in more than half the documents nearly no
  weight (Lucene's idf stays positive). So the FTS5 engine does not call it: it reads each query
  term's document count from FTS5's ``fts5vocab`` row table and its occurrences per document from the
  ``instance`` table, takes document lengths from its own table, and computes the formula above in
  float64 with numpy, for any k1 and b. It is exact, and costs what reading every occurrence of the
  query terms costs, which is less than ``bm25()`` itself costs over the same terms (measured by
  ``benchmarks/bench_hybrid.py`` on a shared 2-core machine: p50 2.1 ms against 3.6 ms for the top
  100 of SciFact's 5,183 abstracts, 30 ms against 93 ms at 200,000 documents). At that scale
  tantivy is the engine to choose (1.6 ms).
- tantivy computes exactly this formula in Rust (its ``bm25.rs``), but with k1 = 1.2 and b = 0.75
  compiled in, and its Python binding exposes no way to change them, no custom scorer and no
  postings. Reading every posting into Python to rescore it would throw away the speed that is the
  reason to choose tantivy, and rescoring only tantivy's top hits would not be exact. So the tantivy
  engine ranks natively and accepts only k1 = 1.2, b = 0.75 (another value is refused when the index
  is created, naming fts5). Its scores differ from the exact ones in three documented ways:
  document lengths above 40 terms are stored in one byte (rounded down by up to about 6%); N, n and
  avgdl still count deleted or replaced documents until tantivy merges their segments away; and it
  sums in float32. Where none of these applies (short documents, nothing deleted) the two engines'
  scores agree to float32 rounding (tests/test_lexical.py); on SciFact's abstracts their top 10
  share 97.8% of their documents on average and both score nDCG@10 0.686.

Each query term counts as often as it occurs in the query (both engines), so "cell cell" weighs
``cell`` twice, as Lucene's query parser does.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ..validation import check_count


def idf(document_count: int, documents_with_term: int) -> float:
    """Lucene's BM25 idf: always positive, even for a term in every document."""
    return math.log(1.0 + (document_count - documents_with_term + 0.5) / (documents_with_term + 0.5))


def query_terms(terms: list[str]) -> dict[str, int]:
    """Each distinct query term and how many times the query holds it, in first-seen order."""
    return dict(Counter(terms))


def check_query(query: Any, k: Any) -> int:
    """``k`` as a positive int; ``query`` a string (anything else is a TypeError naming it)."""
    if not isinstance(query, str):
        raise TypeError(f"a lexical query must be a string, not {type(query).__name__}")
    try:
        counted = check_count(k, what="k", allow_none=False, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"k (the number of results) must be a positive integer, not {k!r}") from None
    assert counted is not None
    return counted
