"""bf16 on the CPU: ours with ``dtype="auto"`` against sentence-transformers in fp32 (its default) and
with bf16 weights, and the agreement of our bf16 vectors with our fp32 ones (cosine, SciFact nDCG@10).

Run by ``benchmarks/bench_encode.py --runs precision-minilm,precision-qwen3``. What ``auto`` picks
depends on the processor (bf16 where it has AVX512_BF16 or AMX, fp32 elsewhere): the first line says
which. On a CPU without bf16 instructions ``--force-bf16`` takes our bf16 path anyway
(``QZHOU_PLUGINS_CPU_BF16=1``) to measure the vectors; its speed there is emulation, not a figure.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qzhou_plugins import Encoder
from qzhou_plugins.backends.local.precision import CPU_BF16_VARIABLE, cpu_computes_bf16
from qzhou_plugins.evaluation.datasets import load_beir
from qzhou_plugins.evaluation.metrics import exact_search, retrieval_metrics


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def precision_run(name: str, folder: str, texts: list[str], repeats: int) -> None:
    """Speeds of four runs on ``texts`` and the cosine of ours-auto to ours-fp32, printed as a table."""
    from sentence_transformers import SentenceTransformer

    auto = Encoder(model=folder, max_length=256 if "MiniLM" in name else 512)
    fp32 = Encoder(model=folder, max_length=auto.max_length, dtype="float32")
    st32 = SentenceTransformer(folder, device="cpu")
    st16 = SentenceTransformer(folder, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    for model in (st32, st16):
        model.max_seq_length = auto.max_length
    vectors = {"auto": auto.encode_documents(texts), "fp32": fp32.encode_documents(texts)}

    def theirs(model: SentenceTransformer) -> Callable[[], object]:
        return lambda: model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)

    runs = {
        f"qzhou-plugins auto ({auto.facts.runtime})": lambda: auto.backend.embed(texts),
        "qzhou-plugins float32": lambda: fp32.backend.embed(texts),
        "sentence-transformers fp32 (default)": theirs(st32),
        "sentence-transformers bf16 weights": theirs(st16),
    }
    seconds = {label: best_seconds(run, repeats) for label, run in runs.items()}
    cosines = np.sum(vectors["auto"] * vectors["fp32"], axis=1)
    print(f"\n== precision, {name}: {len(texts)} texts, {torch.get_num_threads()} threads, best of {repeats}")
    for label, spent in seconds.items():
        print(f"{label:64}{len(texts) / spent:9.1f} texts/s")
    ours = seconds[next(iter(runs))]
    labels = list(seconds)
    print(
        f"ratio ours auto / sentence-transformers fp32: {seconds[labels[2]] / ours:.2f}x; "
        f"/ sentence-transformers bf16 weights: {seconds[labels[3]] / ours:.2f}x; "
        f"/ ours float32: {seconds[labels[1]] / ours:.2f}x"
    )
    print(f"cosine ours auto to ours float32: min {cosines.min():.6f}, mean {cosines.mean():.6f}")


def scifact_ndcg(folder: str, data: Path, queries: int, distractors: int) -> None:
    """nDCG@10 of ours auto and ours fp32 on a SciFact subset: ``queries`` judged queries, their
    relevant abstracts and the first ``distractors`` other abstracts of the corpus."""
    dataset = load_beir(data / "scifact")
    query_ids = sorted(dataset.qrels)[:queries]
    relevant = {doc for query in query_ids for doc in dataset.qrels[query]}
    others = [doc for doc in dataset.corpus if doc not in relevant][:distractors]
    document_ids = sorted(relevant) + others
    qrels = {query: dataset.qrels[query] for query in query_ids}
    scores = {}
    for dtype in ("auto", "float32"):
        encoder = Encoder(model=folder, dtype=dtype)
        documents = encoder.encode_documents([dataset.corpus[doc] for doc in document_ids])
        questions = encoder.encode_queries([dataset.queries[query] for query in query_ids])
        run = exact_search(questions, documents, query_ids, document_ids)
        scores[dtype] = retrieval_metrics(qrels, run)["ndcg_at_10"]
    print(
        f"SciFact subset ({len(query_ids)} queries, {len(document_ids)} abstracts): nDCG@10 auto "
        f"{scores['auto']:.4f}, float32 {scores['float32']:.4f}, difference "
        f"{abs(scores['auto'] - scores['float32']):.4f}"
    )


def precision_runs(runs: set[str], texts: list[str], minilm: str, data: Path, args: object) -> None:
    """The precision runs asked for (``precision-minilm``, ``precision-qwen3``)."""
    if getattr(args, "force_bf16", False):
        os.environ[CPU_BF16_VARIABLE] = "1"
    native = cpu_computes_bf16() if not getattr(args, "force_bf16", False) else "forced (emulated)"
    print(f"\nbf16 instructions on this CPU: {native}")
    repeats = getattr(args, "repeats", 2)
    if "precision-minilm" in runs:
        precision_run("all-MiniLM-L6-v2", minilm, texts, repeats)
        scifact_ndcg(minilm, data, getattr(args, "ndcg_queries", 100), getattr(args, "ndcg_distractors", 300))
    if "precision-qwen3" in runs:
        from qzhou_plugins.testing import save_qwen_tokenizer
        from qzhou_plugins.testing_families import build_qwen3_embedding_checkpoint

        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = save_qwen_tokenizer(Path(scratch) / "tokenizer")
            layers = getattr(args, "qwen_layers", 4)
            # Qwen3-Embedding-0.6B's widths (hidden 1024, 16 heads, 8 KV heads, MLP 3072), fewer layers.
            checkpoint = build_qwen3_embedding_checkpoint(
                Path(scratch), tokenizer, name="Qwen3-Embedding-0.6B-shaped", hidden_size=1024,
                num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=8,
                intermediate_size=3072, weight_scale=0.02,
            )  # fmt: skip
            qwen_texts = texts[: getattr(args, "qwen_texts", 300)]
            name = f"Qwen3-Embedding-0.6B-shaped random model ({layers} layers x 1024)"
            precision_run(name, str(checkpoint), qwen_texts, repeats)
