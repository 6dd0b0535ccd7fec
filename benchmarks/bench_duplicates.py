"""Repeated chunks: each distinct text embedded once per call, against embedding every copy.

Real corpora repeat themselves (headers, footers, disclaimers, the same paragraph in several
documents). Since ``Encoder.encode_with_prefix`` embeds each distinct prefixed text once and hands
its vector to every copy, a corpus with a share of duplicates costs only its distinct texts. The
baseline is what the encoder did before: every text handed to the backend, copies included (the
same backend call, ``encoder.backend.embed``, so the model, batching and threads are equal).

The corpus: SciFact abstracts (../shared/data) cut into ~500-character chunks, of which a share
(``--duplicates``, default 30%) are replaced by copies of other chunks, shuffled. Prints texts/s
of both, the ratio, and the largest difference between the two sets of vectors (the copies get the
vector of their first occurrence, so that is float error from batch composition only).

    .venv/bin/python benchmarks/bench_duplicates.py [--texts 1200] [--duplicates 0.3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from qzhou_plugins import DEMO_MODEL, Encoder

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def corpus_with_duplicates(count: int, share: float, seed: int = 7) -> list[str]:
    """``count`` chunks of SciFact abstracts, ``share`` of them copies of others, shuffled."""
    path = DATA / "scifact" / "corpus.jsonl"
    if not path.is_file():
        sys.exit(f"error: the benchmark reads {path}, which is absent")
    rng = random.Random(seed)
    chunks: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line)["text"]
            chunks += [text[i : i + 500] for i in range(0, len(text), 500) if len(text[i : i + 500]) > 100]
            if len(chunks) >= count:
                break
    distinct = chunks[: round(count * (1 - share))]
    texts = distinct + [rng.choice(distinct) for _ in range(count - len(distinct))]
    rng.shuffle(texts)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1200)
    parser.add_argument("--duplicates", type=float, default=0.3, help="share of copies (default 0.3)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs; the best is kept")
    parser.add_argument("--model", default=DEMO_MODEL)
    args = parser.parse_args()
    texts = corpus_with_duplicates(args.texts, args.duplicates)
    encoder = Encoder(model=args.model)
    encoder.encode_documents(texts[:8])  # warm-up
    best = {"distinct once": float("inf"), "every copy": float("inf")}
    vectors: dict[str, np.ndarray] = {}
    runs = {
        "distinct once": lambda: encoder.encode_documents(texts, show_progress=False),
        "every copy": lambda: encoder.backend.embed(texts, show_progress=False),
    }
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            vectors[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    distinct = len(set(texts))
    print(f"{args.model}: {len(texts)} chunks, {distinct} distinct ({1 - distinct / len(texts):.0%} copies)")
    for name, seconds in best.items():
        print(f"  {name:>13}: {len(texts) / seconds:8.1f} texts/s  ({seconds:.2f} s, best of {args.repeats})")
    print(f"  ratio distinct once / every copy: {best['every copy'] / best['distinct once']:.2f}x")
    difference = np.abs(vectors["distinct once"] - vectors["every copy"]).max()
    print(f"  largest difference between the two sets of vectors: {difference:.2e}")


if __name__ == "__main__":
    main()
