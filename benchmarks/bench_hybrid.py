"""Hybrid search: the lexical side alone (each engine), then dense, lexical and hybrid through the collection.

One run, four parts (parts 3 and 4 are in ``hybrid_collection.py``, which says what they measure):

1. **SciFact quality and latency** (5,183 abstracts, 300 test queries, read with the evaluation
   package's ``load_beir`` and scored with its ``retrieval_metrics``, trec_eval): nDCG@10 and
   Recall@100 of BM25 with each engine (targets: >= 0.675; BEIR's BM25 baseline is 0.665), how far the
   two engines' top 10 agree, the build time, and p50/p95 query latency for the top 100 (the
   candidates a hybrid query takes from the lexical side) and the top 10, ``--repeats`` passes over the
   queries, the best pass of each engine kept. FTS5 is also run with Anserini's BEIR parameters
   (k1 = 0.9, b = 0.4) to show that they are honoured.
2. **Scale** on a synthetic corpus of ``--documents`` documents (200,000 by default), each
   ``--sentences`` sentences drawn at random (seeded) from SciFact's abstracts, queried with SciFact's
   queries: build time (in adds of ``--batch`` documents), adding 1,000 new documents to the built
   index against the build (target <= 5%), replacing 1,000 (upsert), deleting 1,000, the first query
   after reopening, p50/p95 query latency (top 100 and top 10), the top-10 agreement of the engines,
   and the size of each index on disk.

3. **SciFact through QZhouCollection** with all-MiniLM-L6-v2: quality of every mode, query latency
   against dense, disk sizes.
4. **Hybrid at scale**: part 2's corpus in a collection, query latency against dense.

Latencies include analysing the query. The machine's load average is printed with each part: on a
shared machine, compare the engines of one run, not runs of different days. The MiniLM vectors are
kept in ``--cache-dir`` (the encoder's cache), so a second run embeds nothing.

    .venv/bin/python benchmarks/bench_hybrid.py [--documents 200000] [--sentences 3] [--repeats 2]
                                                [--engines fts5,tantivy] [--skip-scale] [--json out.json]
                                                [--cache-dir DIR] [--skip-collection]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hybrid_collection
from qzhou_plugins.evaluation import RetrievalDataset, load_beir, retrieval_metrics
from qzhou_plugins.lexical import LexicalIndex, open_index

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CANDIDATES = 100
"""Lexical hits a hybrid query fuses (the collection's default), the latency that matters most."""
DEPTH = 1000
"""Hits kept per query for the quality metrics (as MTEB keeps)."""
CHANGED = 1000
"""Documents added, replaced and deleted on the built index."""
Searcher = Callable[[str, int], Any]


def load_scifact() -> RetrievalDataset:
    folder = DATA / "scifact"
    if not folder.is_dir():
        sys.exit(f"error: the benchmark reads {folder}, which is absent")
    return load_beir(folder)


def build(folder: Path, engine: str, ids: list[str], texts: list[str], batch: int, **settings: Any) -> float:
    """Seconds to create an index in ``folder`` and add the documents, ``batch`` at a time."""
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    with open_index(folder, engine=engine, **settings) as index:
        for start in range(0, len(ids), batch):
            index.add(ids[start : start + batch], texts[start : start + batch])
    return time.perf_counter() - started


def latencies(search: Searcher, queries: list[str], k: int, repeats: int) -> dict[str, float]:
    """p50 and p95 milliseconds of ``search(query, k)``, the best of ``repeats`` passes."""
    passes = []
    for _ in range(repeats):
        times = []
        for query in queries:
            started = time.perf_counter()
            search(query, k)
            times.append(1000 * (time.perf_counter() - started))
        times.sort()
        passes.append({"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]})
    return min(passes, key=lambda figures: figures["p50_ms"])


def top_ids(index: LexicalIndex, queries: list[str], k: int = 10) -> list[set[str]]:
    return [{hit.id for hit in index.search(query, k)} for query in queries]


def agreement(first: list[set[str]], second: list[set[str]]) -> dict[str, float]:
    """Mean share of one engine's top 10 in the other's, and the share of queries with the same top 10."""
    shares = [len(a & b) / max(len(a), 1) for a, b in zip(first, second, strict=True)]
    return {"mean_overlap": statistics.mean(shares), "identical": sum(s == 1.0 for s in shares) / len(shares)}


def builtin_bm25(folder: Path) -> Callable[[str, int], list[tuple[str, float]]]:
    """A search with FTS5's own ``bm25()`` (k1 = 1.2, b = 0.75, its idf) over the terms of the FTS5
    index in ``folder``: the ranking the exact BM25 replaces, for its latency and its quality.

    The terms are copied from the index (no analysis again) into an in-memory FTS5 table that stores
    its column sizes, as ``bm25()`` needs them.
    """
    from qzhou_plugins.lexical import analyzer

    english = analyzer("english")
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute(f"ATTACH DATABASE '{folder / 'fts5.sqlite3'}' AS built")
    db.execute("""CREATE VIRTUAL TABLE builtin USING fts5(terms, tokenize="ascii tokenchars '._'")""")
    db.execute("INSERT INTO builtin(rowid, terms) SELECT rowid, terms FROM built.postings")
    ids = dict(db.execute("SELECT rowid, id FROM built.documents"))

    def search(query: str, k: int) -> list[tuple[str, float]]:
        words = dict.fromkeys(english(query))
        if not words:
            return []
        match = " OR ".join(f'"{word}"' for word in words)
        sql = "SELECT rowid, -bm25(builtin) FROM builtin WHERE builtin MATCH ? ORDER BY rank LIMIT ?"
        return [(ids[rowid], score) for rowid, score in db.execute(sql, (match, k))]

    return search


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# -- part 1 ------------------------------------------------------------------------------------------


def scifact_part(data: RetrievalDataset, engines: list[str], root: Path, repeats: int) -> dict[str, Any]:
    ids = list(data.corpus)
    texts = [data.corpus[i] for i in ids]
    query_ids = list(data.queries)
    queries = [data.queries[i] for i in query_ids]
    report: dict[str, Any] = {"load": os.getloadavg()[0], "documents": len(ids), "queries": len(queries)}
    variants = [(engine, {}) for engine in engines]
    if "fts5" in engines:
        variants.append(("fts5", {"k1": 0.9, "b": 0.4}))
    tops = {}
    for engine, settings in variants:
        name = engine + ("" if not settings else f" k1={settings['k1']} b={settings['b']}")
        folder = root / f"scifact-{engine}-{len(settings)}"
        seconds = build(folder, engine, ids, texts, 1000, **settings)
        with open_index(folder) as index:
            run = {
                qid: dict(index.search(query, DEPTH)) for qid, query in zip(query_ids, queries, strict=True)
            }
            metrics = retrieval_metrics(data.qrels, run)
            figures = {
                "ndcg_at_10": metrics["ndcg_at_10"],
                "recall_at_100": metrics["recall_at_100"],
                "build_s": seconds,
                f"top{CANDIDATES}": latencies(index.search, queries, CANDIDATES, repeats),
                "top10": latencies(index.search, queries, 10, repeats),
                "disk_mb": folder_mb(folder),
            }
            if not settings:
                tops[engine] = top_ids(index, queries)
        report[name] = figures
        if engine == "fts5" and not settings:
            report["fts5 built-in bm25()"] = builtin_figures(data, builtin_bm25(folder), repeats)
    if len(tops) == 2:
        report["agreement_top10"] = agreement(tops["fts5"], tops["tantivy"])
    return report


def builtin_figures(data: RetrievalDataset, search: Searcher, repeats: int) -> dict[str, Any]:
    queries = list(data.queries.values())
    run = {qid: dict(search(query, DEPTH)) for qid, query in data.queries.items()}
    metrics = retrieval_metrics(data.qrels, run)
    return {
        "ndcg_at_10": metrics["ndcg_at_10"],
        "recall_at_100": metrics["recall_at_100"],
        "build_s": math.nan,
        f"top{CANDIDATES}": latencies(search, queries, CANDIDATES, repeats),
        "top10": latencies(search, queries, 10, repeats),
        "disk_mb": math.nan,
    }


# -- part 2 ------------------------------------------------------------------------------------------


def synthetic_corpus(data: RetrievalDataset, documents: int, sentences: int) -> list[str]:
    """``documents`` texts of ``sentences`` random SciFact sentences each (seed 0)."""
    pool = [s for text in data.corpus.values() for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20]
    chooser = random.Random(0)
    return [" ".join(chooser.choices(pool, k=sentences)) for _ in range(documents)]


def scale_part(
    texts: list[str], queries: list[str], engine: str, root: Path, args: argparse.Namespace
) -> dict:
    ids = [f"doc-{i}" for i in range(len(texts))]
    folder = root / f"scale-{engine}"
    changed_texts = texts[:CHANGED]  # texts of the corpus: the changes bring no new vocabulary
    figures: dict[str, Any] = {"load": os.getloadavg()[0]}
    figures["build_s"] = build(folder, engine, ids, texts, args.batch)
    figures["disk_mb_built"] = folder_mb(folder)
    with open_index(folder) as index:
        started = time.perf_counter()
        index.search(queries[0], CANDIDATES)
        figures["first_query_after_open_ms"] = 1000 * (time.perf_counter() - started)
        figures[f"top{CANDIDATES}"] = latencies(index.search, queries, CANDIDATES, args.repeats)
        figures["top10"] = latencies(index.search, queries, 10, args.repeats)
        figures["tops"] = top_ids(index, queries)
        if engine == "fts5":
            figures["builtin_top100"] = latencies(builtin_bm25(folder), queries, CANDIDATES, args.repeats)
        new_ids = [f"new-{i}" for i in range(CHANGED)]
        figures["add_1000_s"] = timed(lambda: index.add(new_ids, changed_texts))
        replaced = ids[CHANGED : 2 * CHANGED]
        figures["replace_1000_s"] = timed(lambda: index.add(replaced, changed_texts[::-1]))
        figures["delete_1000_s"] = timed(lambda: index.delete(ids[2 * CHANGED : 3 * CHANGED]))
        figures["count_after"] = index.count()
        figures["top100_after_changes"] = latencies(index.search, queries, CANDIDATES, 1)
    figures["disk_mb_after_changes"] = folder_mb(folder)
    for change in ("add", "replace", "delete"):
        figures[f"{change}_1000_vs_build"] = figures[f"{change}_1000_s"] / figures["build_s"]
    return figures


# -- printing ----------------------------------------------------------------------------------------


def print_scifact(report: dict[str, Any]) -> None:
    print(
        f"\nSciFact: {report['documents']} documents, {report['queries']} queries (load {report['load']:.1f})"
    )
    print(f"{'engine':<22}{'nDCG@10':>9}{'R@100':>8}{'build s':>9}{'p50/p95 top100 ms':>19}"
          f"{'p50/p95 top10 ms':>18}{'disk MB':>9}")  # fmt: skip
    for name, f in report.items():
        if isinstance(f, dict) and "ndcg_at_10" in f:
            top100, top10 = f[f"top{CANDIDATES}"], f["top10"]
            print(
                f"{name:<22}{f['ndcg_at_10']:>9.4f}{f['recall_at_100']:>8.4f}{f['build_s']:>9.1f}"
                f"{top100['p50_ms']:>10.2f}/{top100['p95_ms']:<8.2f}{top10['p50_ms']:>9.2f}/{top10['p95_ms']:<8.2f}"
                f"{f['disk_mb']:>9.1f}"
            )
    if "agreement_top10" in report:
        a = report["agreement_top10"]
        print(f"top 10 of fts5 and tantivy: {a['mean_overlap']:.1%} shared on average, ", end="")
        print(f"the same on {a['identical']:.1%} of the queries")
        fts5, tantivy = report["fts5"]["top100"]["p50_ms"], report["tantivy"]["top100"]["p50_ms"]
        print(f"tantivy p50 (top 100) is {tantivy / fts5:.2f}x fts5's")
    if "fts5 built-in bm25()" in report:
        ratio = report["fts5"]["top100"]["p50_ms"] / report["fts5 built-in bm25()"]["top100"]["p50_ms"]
        print(f"the exact BM25 of fts5 has {ratio:.2f}x the p50 of FTS5's built-in bm25()")


def print_scale(report: dict[str, Any]) -> None:
    print(f"\nScale: {report['documents']} synthetic documents of {report['sentences']} SciFact sentences")
    for engine, f in report["engines"].items():
        print(
            f"{engine}: build {f['build_s']:.1f} s ({report['documents'] / f['build_s']:,.0f} docs/s, "
            f"load {f['load']:.1f}); disk {f['disk_mb_built']:.1f} MB built, "
            f"{f['disk_mb_after_changes']:.1f} MB after the changes\n"
            f"  add 1,000: {f['add_1000_s']:.2f} s = {f['add_1000_vs_build']:.2%} of the build (target 5%); "
            f"replace 1,000: {f['replace_1000_s']:.2f} s ({f['replace_1000_vs_build']:.2%}); "
            f"delete 1,000: {f['delete_1000_s']:.2f} s ({f['delete_1000_vs_build']:.2%})\n"
            f"  query top100 p50/p95 {f['top100']['p50_ms']:.2f}/{f['top100']['p95_ms']:.2f} ms, "
            f"top10 {f['top10']['p50_ms']:.2f}/{f['top10']['p95_ms']:.2f} ms, after the changes "
            f"{f['top100_after_changes']['p50_ms']:.2f}/{f['top100_after_changes']['p95_ms']:.2f} ms; "
            f"first query after opening {f['first_query_after_open_ms']:.1f} ms"
        )
        if "builtin_top100" in f:
            builtin = f["builtin_top100"]
            ratio = f["top100"]["p50_ms"] / builtin["p50_ms"]
            print(
                f"  FTS5's built-in bm25() on the same terms: top100 p50/p95 {builtin['p50_ms']:.2f}/"
                f"{builtin['p95_ms']:.2f} ms; the exact BM25's p50 is {ratio:.2f}x"
            )
    if "agreement_top10" in report:
        a = report["agreement_top10"]
        print(f"top 10 of fts5 and tantivy: {a['mean_overlap']:.1%} shared on average, ", end="")
        print(f"the same on {a['identical']:.1%} of the queries")
        ratio = (
            report["engines"]["tantivy"]["top100"]["p50_ms"] / report["engines"]["fts5"]["top100"]["p50_ms"]
        )
        print(f"tantivy p50 (top 100) is {ratio:.2f}x fts5's")


def collection_parts(
    report: dict[str, Any], data: RetrievalDataset, engines: list[str], root: Path, args: argparse.Namespace
) -> None:
    """Parts 3 and 4 (:mod:`hybrid_collection`), printed as they end."""
    import torch

    torch.set_num_threads(args.torch_threads)
    print(f"\n(torch threads: {torch.get_num_threads()} of {os.cpu_count()} cores)")
    report["collection"] = hybrid_collection.collection_part(
        data, engines, root, args.cache_dir, args.repeats
    )
    hybrid_collection.print_collection(report["collection"])
    if not args.skip_scale:
        part = hybrid_collection.scale_hybrid_part(data, engines, root, args.cache_dir, args)
        report["scale_hybrid"] = part
        hybrid_collection.print_scale_hybrid(part, args.documents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--sentences", type=int, default=3, help="SciFact sentences per synthetic document")
    parser.add_argument("--batch", type=int, default=5000, help="documents per add while building")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the queries; the best is kept")
    parser.add_argument("--engines", default="fts5,tantivy")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-collection", action="store_true", help="leave out parts 3 and 4")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "qzhou-bench-hybrid-vectors",
        help="where the MiniLM vectors are kept between runs",
    )  # fmt: skip
    parser.add_argument(
        "--torch-threads", type=int, default=1,
        help="torch threads for the query embedding (default 1: on 2 cores the lexical side of a hybrid "
        "query runs on the other one)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    engines = args.engines.split(",")
    data = load_scifact()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hybrid-") as temporary:
        root = Path(temporary)
        report["scifact"] = scifact_part(data, engines, root, args.repeats)
        print_scifact(report["scifact"])
        if not args.skip_scale:
            texts = synthetic_corpus(data, args.documents, args.sentences)
            queries = list(data.queries.values())
            scale = {"documents": len(texts), "sentences": args.sentences, "engines": {}}
            for engine in engines:
                scale["engines"][engine] = scale_part(texts, queries, engine, root, args)
                shutil.rmtree(root / f"scale-{engine}")
            tops = {engine: figures.pop("tops") for engine, figures in scale["engines"].items()}
            if len(tops) == 2:
                scale["agreement_top10"] = agreement(tops["fts5"], tops["tantivy"])
            report["scale"] = scale
            print_scale(scale)
        if not args.skip_collection:
            collection_parts(report, data, engines, root, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
