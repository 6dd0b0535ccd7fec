"""Real server processes on 127.0.0.1 for the tests: a free port, readiness, clean stop, and the
Infinity embedding server in a venv of its own (it pins transformers<5 and numpy<2)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from conftest import REPO

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
