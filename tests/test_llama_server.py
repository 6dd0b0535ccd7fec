"""The remote backend against llama.cpp serving the exported file: llama-cpp-python's own
OpenAI-compatible server, a real process on 127.0.0.1 started from .venv-llama with no flag about
attention or pooling. The file makes it bidirectional with mean pooling; our client applies QZhou's
instructions; the vectors must be the torch encoder's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from qzhou_plugins import Encoder
from servers import free_port, llama_python, running

SERVED_NAME = "qzhou-tiny-f16"
"""The name the server lists: the client knows a QZhou model by its name, so it applies the instructions."""
TEXTS = ["Green tea is brewed at 70-80 °C.", "Which plant does tea come from?", "绿茶的冲泡温度是多少？"]

pytestmark = pytest.mark.timeout(3600)  # the first run may compile llama-cpp-python into .venv-llama


@pytest.fixture(scope="module")
def llama_server(gguf_file: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = llama_python()
    port = free_port()
    command = [
        str(python), "-m", "llama_cpp.server", "--model", str(gguf_file("qzhou", "f16")),
        "--model_alias", SERVED_NAME, "--embedding", "true", "--host", "127.0.0.1", "--port", str(port),
        "--n_threads", "1", "--n_ctx", "2048",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with running(command, base + "/models", log):
        yield base


def test_llama_cpp_server_gives_the_torch_vectors_with_our_instructions(
    llama_server: str, tiny_qzhou: Encoder
) -> None:
    remote = Encoder(model=SERVED_NAME, base_url=llama_server)
    local = tiny_qzhou
    assert remote.family == "qzhou"
    assert remote.prefixes() == local.prefixes()  # the retrieval instruction, applied by the client
    for side in ("encode_queries", "encode_documents"):
        served, reference = getattr(remote, side)(TEXTS), getattr(local, side)(TEXTS)
        assert np.sum(served * reference, axis=1).min() >= 0.9999, side
