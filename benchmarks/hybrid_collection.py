"""The collection parts of ``bench_hybrid.py``: dense, lexical and hybrid through ``QZhouCollection``.

Everything here goes through the code users get: a real ``QZhouCollection`` (Chroma plus its lexical
index, written by the helper's one write path), ``query(mode=...)`` for the rankings and the latencies,
and ``evaluate_retrieval(mode=...)`` (what ``qzhou-plugins eval retrieval --mode`` runs) beside it.

3. **SciFact through the collection**, once per engine: nDCG@10 and Recall@100 of dense, lexical and
   hybrid (rrf; weighted with alpha 0.5), with all-MiniLM-L6-v2 (targets: lexical >= 0.675, hybrid
   rrf >= 0.70); the same figures from the evaluation; p50/p95 latency of one query (top 10) lexical
   alone and hybrid end to end against dense alone (target: hybrid p50 <= 1.5x dense p50 with FTS5);
   the disk size of each lexical index next to Chroma's own.
4. **Hybrid at scale**: the synthetic corpus of part 2 (``--documents`` texts of SciFact sentences)
   in a collection, each text's vector the normalised mean of its sentences' MiniLM vectors (the
   sentences are embedded once, not the 200,000 texts); p50/p95 latency dense, lexical and hybrid
   (target: hybrid p50 <= 1.5x dense p50 with tantivy), and the disk sizes.

Chroma's nearest neighbours are approximate (HNSW), so the dense side of two collections of the same
texts can differ a little, and their hybrid figures with it; the evaluation's dense side is exact.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.chroma import QZhouCollection
from qzhou_plugins.evaluation import RetrievalDataset, evaluate_retrieval, retrieval_metrics
from qzhou_plugins.integrations.chroma.records import Record
from qzhou_plugins.integrations.chroma.writing import write_batch

DEPTH = 100
"""Hits per query for the quality runs: Recall@100 needs 100."""
MODES = (("dense", {}), ("lexical", {}), ("hybrid rrf", {"fusion": "rrf"}),
         ("hybrid weighted 0.5", {"fusion": "weighted", "alpha": 0.5}))  # fmt: skip


def folder_mb(folder: Path, *, skip: str | None = None) -> float:
    """Megabytes of the files under ``folder`` (leaving out the sub-folder ``skip``)."""
    files = (p for p in folder.rglob("*") if p.is_file() and (skip is None or skip not in p.parts))
    return sum(path.stat().st_size for path in files) / 2**20


def mode_latencies(collection: Any, queries: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """p50 and p95 milliseconds of one query (top 10) in each mode, the best of ``repeats`` passes.

    The modes take turns on each query (in a rotating order), so that a burst of load on a shared
    machine falls on all of them alike rather than on whichever mode was being timed.
    """
    modes = ("dense", "lexical", "hybrid")
    passes: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for number, query in enumerate(queries):
            for mode in modes[number % 3 :] + modes[: number % 3]:
                started = time.perf_counter()
                collection.query(query, mode=mode)
                times[mode].append(1000 * (time.perf_counter() - started))
        for mode, measured in times.items():
            measured.sort()
            passes[mode].append(
                {"p50_ms": statistics.median(measured), "p95_ms": measured[int(0.95 * (len(measured) - 1))]}
            )
    return {f"{mode}_latency": min(found, key=lambda f: f["p50_ms"]) for mode, found in passes.items()}


def uncached(collection: Any) -> Any:
    """The collection reopened without the vector cache: a timed query must really embed its text."""
    reopened = QZhouCollection.open(collection.name, client=collection.client)
    reopened.query(["a first query loads the model"], mode="hybrid")
    return reopened


def disk_sizes(folder: Path) -> dict[str, float]:
    """Megabytes of a database folder: Chroma's own files, and the lexical indexes beside them."""
    return {
        "chroma_mb": folder_mb(folder, skip="qzhou-lexical"),
        "lexical_mb": folder_mb(folder / "qzhou-lexical"),
    }


def mode_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"mode": name.split()[0], **options}


# -- part 3: SciFact through the collection -------------------------------------------------------------


def scifact_collection(data: RetrievalDataset, root: Path, engine: str, cache_dir: Path) -> tuple[Any, float]:
    """All of SciFact in a collection with this lexical engine; and the seconds ``add`` took."""
    collection = QZhouCollection.open(
        f"scifact-{engine}", path=root / f"db-{engine}", model=DEMO_MODEL, cache_dir=cache_dir,
        lexical_engine=engine,
    )  # fmt: skip
    started = time.perf_counter()
    collection.add(list(data.corpus.values()), ids=list(data.corpus), batch_size=1000, show_progress=False)
    return collection, time.perf_counter() - started


def collection_run(collection: Any, data: RetrievalDataset, **options: Any) -> dict[str, dict[str, float]]:
    """The top ``DEPTH`` of each query by ``collection.query`` (a query's own id left out, as MTEB does)."""
    query_ids = list(data.queries)
    results = collection.query([data.queries[q] for q in query_ids], n_results=DEPTH + 1, **options)
    run = {}
    for query_id, result in zip(query_ids, results, strict=True):
        hits = [hit for hit in result.hits if hit.id != query_id][:DEPTH]
        # The order is the collection's: scores by rank, so trec_eval breaks no tie its own way.
        run[query_id] = {hit.id: float(len(hits) - rank) for rank, hit in enumerate(hits)}
    return run


def scifact_quality(collection: Any, data: RetrievalDataset, engine: str, cache_dir: Path) -> dict[str, Any]:
    """nDCG@10 and Recall@100 of each mode, through the collection and through the evaluation."""
    encoder = Encoder.shared(model=DEMO_MODEL, cache_dir=cache_dir)
    figures = {}
    for name, options in MODES:
        metrics = retrieval_metrics(
            data.qrels, collection_run(collection, data, **mode_options(name, options))
        )
        evaluated = evaluate_retrieval(
            None if name == "lexical" else encoder, data, lexical_engine=engine, show_progress=False,
            **mode_options(name, options),
        )  # fmt: skip
        figures[name] = {
            "ndcg_at_10": metrics["ndcg_at_10"],
            "recall_at_100": metrics["recall_at_100"],
            "eval_ndcg_at_10": evaluated.ndcg_at_10,
            "eval_recall_at_100": evaluated.recall_at_100,
        }
    return figures


def collection_part(
    data: RetrievalDataset, engines: list[str], root: Path, cache_dir: Path, repeats: int
) -> dict[str, Any]:
    queries = list(data.queries.values())
    report: dict[str, Any] = {"load": os.getloadavg()[0], "engines": {}}
    for engine in engines:
        collection, add_s = scifact_collection(data, root, engine, cache_dir)
        collection.query(queries[:5], mode="hybrid")  # warm: model, Chroma's index, the lexical reader
        figures: dict[str, Any] = {
            "add_s": add_s,
            "quality": scifact_quality(collection, data, engine, cache_dir),
        }
        figures |= mode_latencies(uncached(collection), queries, repeats)
        figures |= disk_sizes(root / f"db-{engine}")
        report["engines"][engine] = figures
    return report


# -- part 4: hybrid at scale ------------------------------------------------------------------------------


def sentence_pool(data: RetrievalDataset) -> list[str]:
    """SciFact's sentences, as part 2 of bench_hybrid.py cuts them (the same pool, the same order)."""
    return [s for text in data.corpus.values() for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20]


def synthetic_records(pool: list[str], vectors: np.ndarray, documents: int, sentences: int) -> list[Record]:
    """Part 2's synthetic texts (the same seed and draws), each with the mean vector of its sentences."""
    chooser = random.Random(0)
    records = []
    for number in range(documents):
        chosen = chooser.choices(range(len(pool)), k=sentences)  # the draws of choices(pool, k=...)
        mean = vectors[chosen].mean(axis=0)
        records.append(
            Record(id=f"doc-{number}", text=" ".join(pool[i] for i in chosen), metadata=None,
                   vector=(mean / np.linalg.norm(mean)).astype(np.float32))
        )  # fmt: skip
    return records


def scale_collection(
    records: list[Record], root: Path, engine: str, cache_dir: Path, batch: int
) -> tuple[Any, float]:
    """The synthetic records in a collection, written by the helper's write path; the seconds it took."""
    collection = QZhouCollection.open(
        f"scale-{engine}", path=root / f"scale-db-{engine}", model=DEMO_MODEL, cache_dir=cache_dir,
        lexical_engine=engine,
    )  # fmt: skip
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        write_batch(collection.client, collection.collection, records[start : start + batch],
                    lexical=collection.lexical)  # fmt: skip
    return collection, time.perf_counter() - started


def scale_hybrid_part(
    data: RetrievalDataset, engines: list[str], root: Path, cache_dir: Path, args: Any
) -> dict[str, Any]:
    pool = sentence_pool(data)
    encoder = Encoder.shared(model=DEMO_MODEL, cache_dir=cache_dir)
    started = time.perf_counter()
    vectors = encoder.encode_documents(pool, show_progress=True)
    report: dict[str, Any] = {"sentences_embedded_s": time.perf_counter() - started, "engines": {}}
    records = synthetic_records(pool, vectors, args.documents, args.sentences)
    queries = list(data.queries.values())
    for engine in engines:
        collection, build_s = scale_collection(records, root, engine, cache_dir, args.batch)
        collection.query(queries[:5], mode="hybrid")
        figures: dict[str, Any] = {"load": os.getloadavg()[0], "build_s": build_s}
        figures |= {
            "count": collection.count(),
            **mode_latencies(uncached(collection), queries, args.repeats),
        }
        figures |= disk_sizes(root / f"scale-db-{engine}")
        report["engines"][engine] = figures
        collection.lexical.close()
    return report


# -- printing ---------------------------------------------------------------------------------------------


def print_latencies(figures: dict[str, Any], target_engine: bool) -> None:
    dense = figures["dense_latency"]["p50_ms"]
    for mode in ("dense", "lexical", "hybrid"):
        f = figures[f"{mode}_latency"]
        ratio = f["p50_ms"] / dense
        mark = "  (target <= 1.50x)" if mode == "hybrid" and target_engine else ""
        print(f"  {mode:<8} p50/p95 {f['p50_ms']:7.2f}/{f['p95_ms']:<7.2f} ms   p50 {ratio:.2f}x dense{mark}")


def print_disk(figures: dict[str, Any], engine: str) -> None:
    chroma, lexical = figures["chroma_mb"], figures["lexical_mb"]
    print(
        f"  disk: Chroma {chroma:.1f} MB, lexical index ({engine}) {lexical:.1f} MB ({lexical / chroma:.0%})"
    )


def print_collection(report: dict[str, Any]) -> None:
    print(f"\nSciFact through QZhouCollection (all-MiniLM-L6-v2; load {report['load']:.1f})")
    print(f"{'mode':<40}{'nDCG@10':>9}{'R@100':>8}{'eval nDCG@10':>14}{'eval R@100':>12}")
    for engine, figures in report["engines"].items():
        for name, f in figures["quality"].items():
            label = f"{name} ({engine} collection)"
            print(f"{label:<40}{f['ndcg_at_10']:>9.4f}{f['recall_at_100']:>8.4f}"
                  f"{f['eval_ndcg_at_10']:>14.4f}{f['eval_recall_at_100']:>12.4f}")  # fmt: skip
    for engine, figures in report["engines"].items():
        print(f"latency of one query (top 10), 5,183 abstracts, {engine}:")
        print_latencies(figures, engine == "fts5")
        print_disk(figures, engine)
        print(f"  add of the 5,183 abstracts (vectors cached): {figures['add_s']:.1f} s")


def print_scale_hybrid(report: dict[str, Any], documents: int) -> None:
    embedded = report["sentences_embedded_s"]
    print(f"\nHybrid at scale: {documents:,} synthetic documents in a collection", end="")
    print(f" (their sentences embedded in {embedded:.0f} s)")
    for engine, figures in report["engines"].items():
        written = f"{figures['count']:,} records written in {figures['build_s']:.0f} s"
        print(f"{engine}: {written} (Chroma and lexical; load {figures['load']:.1f})")
        print_latencies(figures, engine == "tantivy")
        print_disk(figures, engine)
