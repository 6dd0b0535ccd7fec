"""The remote backend's async client under concurrency, against a bare aiohttp client as the baseline.

Our server (``python -m qzhou_plugins.server --model all-MiniLM-L6-v2``, batching on) runs as its own
process on 127.0.0.1. From 1, 16, 64 and 256 concurrent closed-loop callers, the same number of
single-query requests is made two ways, alternately, best of ``--repeats``:

- **ours**: ``await QZhouEmbeddings(model=..., base_url=...).aembed_query(query)``, the LangChain
  adapter over the remote backend (validation, the instruction prefix, the request, base64 decoding,
  normalisation, a list of floats back);
- **aiohttp**: one ``aiohttp.ClientSession`` posting the very body our client sends (the prefixed
  query, base64 asked for) and reading the answer's bytes: the client cost of a request at its lowest.

It prints requests/s and p50/p99 latency of each and ours / aiohttp (target >= 0.8 at 64 and 256:
the client must not be what limits an async RAG pipeline over ``base_url``). Both get aiohttp's
default of 100 connections (ours: ``max_connections``). ``--httpx`` adds the client this backend had
before (a new ``httpx.AsyncClient`` per call) for comparison. Queries are SciFact's when
``../shared/data`` has them, else generated sentences. The server gets half the CPUs for torch
(``OMP_NUM_THREADS``), the clients and the server's event loop the rest.

    .venv/bin/python benchmarks/bench_remote_async.py [--repeats 2] [--max-seconds 20] [--httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MODEL = "all-MiniLM-L6-v2"
HOST = "127.0.0.1"
Outcome = tuple[int, float, list[float]]
"""Requests done, seconds, latencies of one run."""
REQUESTS = {1: 64, 16: 256, 64: 512, 256: 1024}
"""Requests per run at each concurrency: bounded, so that the whole run takes a couple of minutes."""


@dataclass
class Run:
    client: str
    concurrency: int
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cells(self) -> str:
        p50, p99 = np.percentile(self.latencies, [50, 99]) * 1000
        return f"{self.rate:.0f} | {p50:.1f} / {p99:.1f}"


def queries(count: int) -> list[str]:
    """SciFact test queries when present (repeated as needed), else generated ones."""
    path = DATA / "scifact" / "queries.jsonl"
    if path.is_file():
        asked = [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines() if line.strip()]
    else:
        asked = [f"what does study {i} say about protein {i % 37} in cell line {i % 11}?" for i in range(300)]
    return [f"{asked[i % len(asked)]} ({i})" for i in range(count)]  # distinct: no cache can help


def start_server(log: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "qzhou_plugins.server", "--model", MODEL, "--port", str(port)]
    command += ["--log-level", "warning"]
    environment = {k: v for k, v in os.environ.items() if k != "QZHOU_API_KEY"}
    environment |= {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    sys.exit("error: the server was not ready after 300 s")


async def closed_loop(
    call: Callable[[str], Awaitable[object]], texts: list[str], concurrency: int, max_seconds: float
) -> Outcome:
    """``concurrency`` callers each awaiting ``call`` on the next text until none is left (or time is
    up): requests done, seconds, latencies. A warm-up of a few calls first opens connections."""
    await asyncio.gather(*(call(text) for text in texts[: min(concurrency, 8)]))
    pending = list(reversed(texts))
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds

    async def caller() -> None:
        while pending and time.perf_counter() < deadline:
            text = pending.pop()
            began = time.perf_counter()
            await call(text)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies), time.perf_counter() - began, latencies


def body(prefix: str, text: str) -> bytes:
    """What our client sends for one query (backends/remote.py ``_body``)."""
    return json.dumps({"model": MODEL, "input": [prefix + text], "encoding_format": "base64"}).encode()


async def with_aiohttp(
    url: str, prefix: str, texts: list[str], concurrency: int, max_seconds: float
) -> Outcome:
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:  # aiohttp's defaults: 100 connections

        async def call(text: str) -> None:
            async with session.post(url + "/v1/embeddings", data=body(prefix, text)) as answer:
                content = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{answer.status}: {content[:300]!r}")

        return await closed_loop(call, texts, concurrency, max_seconds)


async def with_httpx_per_call(
    url: str, prefix: str, texts: list[str], concurrency: int, max_seconds: float
) -> Outcome:
    """The previous remote backend's async path: a new ``httpx.AsyncClient`` for every call."""

    async def call(text: str) -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.post(url + "/v1/embeddings", content=body(prefix, text),
                                       headers={"Content-Type": "application/json"})  # fmt: skip
            answer.raise_for_status()

    return await closed_loop(call, texts, concurrency, max_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="1,16,64,256", help="callers, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating; the best is kept")
    parser.add_argument("--max-seconds", type=float, default=20, help="cap on one run")
    parser.add_argument(
        "--httpx", action="store_true", help="also the old client: httpx.AsyncClient per call"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="torch threads in the server (default: half the CPUs, %(default)s here)",
    )
    args = parser.parse_args(argv)
    concurrencies = [int(part) for part in args.concurrency.split(",") if part]
    from qzhou_plugins.langchain import QZhouEmbeddings

    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder) / "server.log", args.threads)
        try:
            embeddings = QZhouEmbeddings(model=MODEL, base_url=url + "/v1")
            prefix, _ = embeddings.encoder.prefixes(embeddings.task)
            check(embeddings, url, prefix)
            results = bench(embeddings, url, prefix, concurrencies, args)
        finally:
            process.terminate()
            process.wait(timeout=60)
    report(results, concurrencies, args.httpx)


def check(embeddings: Any, url: str, prefix: str) -> None:
    """Ours and the bare request give the same vector: the baseline sends what our client sends."""
    import base64

    ours = np.asarray(asyncio.run(embeddings.aembed_query("what causes rain?")))
    answer = httpx.post(url + "/v1/embeddings", content=body(prefix, "what causes rain?"),
                        headers={"Content-Type": "application/json"}).json()  # fmt: skip
    bare = np.frombuffer(base64.b64decode(answer["data"][0]["embedding"]), dtype="<f4")
    cosine = float(ours @ bare / np.linalg.norm(bare))
    print(f"ours against the bare request: cosine {cosine:.6f} (same body, same vector)", flush=True)
    assert cosine > 0.99999, cosine


def bench(
    embeddings: Any, url: str, prefix: str, concurrencies: list[int], args: argparse.Namespace
) -> list[Run]:
    """Each concurrency: the clients alternately, ``--repeats`` times, the best run of each kept."""
    names = ["ours", "aiohttp", *(["httpx per call"] if args.httpx else [])]
    results: list[Run] = []
    for concurrency in concurrencies:
        texts = queries(REQUESTS.get(concurrency, 4 * concurrency))
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in names:
                if name == "ours":
                    way = closed_loop(embeddings.aembed_query, texts, concurrency, args.max_seconds)
                elif name == "aiohttp":
                    way = with_aiohttp(url, prefix, texts, concurrency, args.max_seconds)
                else:
                    way = with_httpx_per_call(url, prefix, texts, concurrency, args.max_seconds)
                runs[name].append(Run(name, concurrency, *asyncio.run(way)))
        for name in names:
            results.append(max(runs[name], key=lambda result: result.rate))
            print(f"{name:>15} c={concurrency:<4} {results[-1].cells()} (req/s | p50 / p99 ms)", flush=True)
    return results


def report(results: list[Run], concurrencies: list[int], with_httpx: bool) -> None:
    found = {(result.client, result.concurrency): result for result in results}
    extra = " httpx per call req/s |" if with_httpx else ""
    print(f"\n| concurrent calls | ours req/s | aiohttp req/s | ours / aiohttp | ours p50 / p99 ms | "
          f"aiohttp p50 / p99 ms |{extra}")  # fmt: skip
    print("|---" * (6 + with_httpx) + "|")
    for concurrency in concurrencies:
        ours, bare = found[("ours", concurrency)], found[("aiohttp", concurrency)]
        row = f"| {concurrency} | {ours.rate:.0f} | {bare.rate:.0f} | {ours.rate / bare.rate:.2f} | "
        row += f"{ours.cells().split(' | ')[1]} | {bare.cells().split(' | ')[1]} |"
        if with_httpx:
            row += f" {found[('httpx per call', concurrency)].rate:.0f} |"
        print(row)
    print("(target: ours / aiohttp >= 0.8 at 64 and 256)")


if __name__ == "__main__":
    main()
