"""LangChain's own standard test suites (``langchain-tests``) run against ``QZhouEmbeddings``.

They run twice: on all-MiniLM-L6-v2 (a real BERT-style model, by its demo name as users write it)
and on a tiny random QZhou-shaped checkpoint (the decoder path: bidirectional Qwen2, left padding,
instructions). The unit suites run with sockets disabled, as LangChain runs unit tests, to show that
construction needs no network; pytest-socket restores sockets after each of those tests.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.langchain import QZhouEmbeddings


class _MiniLM:
    @property
    def embeddings_class(self) -> type[QZhouEmbeddings]:
        return QZhouEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": DEMO_MODEL}


class _TinyQZhou:
    """The checkpoint path is a session fixture; it is bound to the test instance before each test."""

    checkpoint: str

    @pytest.fixture(autouse=True)
    def _bind_checkpoint(self, tiny_qzhou_path: str) -> None:
        self.checkpoint = tiny_qzhou_path

    @property
    def embeddings_class(self) -> type[QZhouEmbeddings]:
        return QZhouEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": self.checkpoint, "task": "retrieval", "batch_tokens": 4096}


@pytest.mark.disable_socket
class TestMiniLMUnit(_MiniLM, EmbeddingsUnitTests):
    pass


class TestMiniLMIntegration(_MiniLM, EmbeddingsIntegrationTests):
    pass


@pytest.mark.disable_socket
class TestTinyQZhouUnit(_TinyQZhou, EmbeddingsUnitTests):
    pass


class TestTinyQZhouIntegration(_TinyQZhou, EmbeddingsIntegrationTests):
    pass


def test_sockets_work_again_after_the_unit_suites() -> None:
    """pytest-socket (pulled in by langchain-tests) must not leave sockets disabled for other tests."""
    left, right = socket.socketpair()
    left.close()
    right.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
