"""Unmodified third-party OpenAI clients against our server: the ``openai`` SDK, LangChain's
``OpenAIEmbeddings`` and LlamaIndex's ``OpenAIEmbedding`` / ``OpenAILikeEmbedding``.

Each recipe is the one docs/serving.md shows, and each client's vectors must equal the in-process
encoder's for the side it asks for. The server is the tiny QZhou checkpoint (where the instruction
and its side change the vectors), behind an API key, started once for the module.
"""

from __future__ import annotations

import asyncio
import json
import os
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pytest

from qzhou_plugins import Encoder
from servers import SERVER_KEY, ServerProcess
from test_server import PASSAGES, QUESTIONS, assert_same_vectors

openai = pytest.importorskip("openai")

KEY = SERVER_KEY


@pytest.fixture(scope="module")
def server(qzhou_server: ServerProcess) -> ServerProcess:
    """The session's tiny QZhou server (served under its path, behind SERVER_KEY)."""
    return qzhou_server


@pytest.fixture(scope="module")
def local(tiny_qzhou: Encoder) -> Encoder:
    return tiny_qzhou


def base_url(server: ServerProcess) -> str:
    return server.url + "/v1"


# -- the openai SDK ------------------------------------------------------------------------------------


def test_openai_sdk_base64_by_default_float_on_request_and_both_sides(
    server: ServerProcess, local: Encoder
) -> None:
    sent: list[dict[str, object]] = []
    recorder = httpx.Client(
        event_hooks={"request": [lambda request: sent.append(json.loads(request.read()))]}
    )
    client = openai.OpenAI(base_url=base_url(server), api_key=KEY, http_client=recorder, max_retries=0)
    documents = local.encode_documents(PASSAGES)
    default = client.embeddings.create(model=server.name, input=PASSAGES)
    assert sent[-1]["encoding_format"] == "base64"  # what the SDK asks for unless told otherwise
    assert_same_vectors(np.array([item.embedding for item in default.data]), documents)
    assert default.model == server.name and default.usage.prompt_tokens > 0
    floats = client.embeddings.create(model=server.name, input=PASSAGES, encoding_format="float")
    assert sent[-1]["encoding_format"] == "float"
    assert_same_vectors(np.array([item.embedding for item in floats.data]), documents)
    queries = client.embeddings.create(model=server.name + "-query", input=QUESTIONS)
    assert_same_vectors(np.array([item.embedding for item in queries.data]), local.encode_queries(QUESTIONS))
    fiqa = client.embeddings.create(
        model=server.name, input=QUESTIONS, extra_body={"input_type": "query", "task": "FiQA2018"}
    )
    expected = local.encode_queries(QUESTIONS, "FiQA2018")
    assert_same_vectors(np.array([item.embedding for item in fiqa.data]), expected)


def test_openai_sdk_errors_carry_our_messages(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=base_url(server), api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match=server.name):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model=server.name, input=[[9906, 1917]])
    with pytest.raises(openai.BadRequestError, match="not a Matryoshka model"):
        client.embeddings.create(model=server.name, input="x", dimensions=32)
    with pytest.raises(openai.BadRequestError, match=r"position\(s\) 1"):
        client.embeddings.create(model=server.name, input=["x", " "])
    wrong_key = openai.OpenAI(base_url=base_url(server), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Bearer"):
        wrong_key.embeddings.create(model=server.name, input="x")


def test_async_openai_sdk_concurrent_queries(server: ServerProcess, local: Encoder) -> None:
    texts = [f"question number {i} about tides?" for i in range(24)]

    async def run() -> list[list[float]]:
        client = openai.AsyncOpenAI(base_url=base_url(server), api_key=KEY, max_retries=0)
        answers = await asyncio.gather(
            *(client.embeddings.create(model=server.name + "-query", input=text) for text in texts)
        )
        await client.close()
        return [answer.data[0].embedding for answer in answers]

    assert_same_vectors(np.array(asyncio.run(run())), local.encode_queries(texts))


# -- LangChain -------------------------------------------------------------------------------------------


def test_langchain_openai_embeddings_documents_and_queries(server: ServerProcess, local: Encoder) -> None:
    from langchain_openai import OpenAIEmbeddings

    common = {"base_url": base_url(server), "api_key": KEY, "check_embedding_ctx_length": False}
    documents = OpenAIEmbeddings(model=server.name, **common)
    queries = OpenAIEmbeddings(model=server.name + "-query", **common)
    assert_same_vectors(np.array(documents.embed_documents(PASSAGES)), local.encode_documents(PASSAGES))
    assert_same_vectors(np.array([queries.embed_query(QUESTIONS[0])]), local.encode_queries(QUESTIONS[:1]))
    from_async = asyncio.run(queries.aembed_documents(QUESTIONS))
    assert_same_vectors(np.array(from_async), local.encode_queries(QUESTIONS))
    sts = OpenAIEmbeddings(model=server.name, model_kwargs={"extra_body": {"task": "sts"}}, **common)
    assert_same_vectors(np.array(sts.embed_documents(QUESTIONS)), local.encode_documents(QUESTIONS, "sts"))


def cl100k_cache() -> Path | None:
    """llama-index-core ships tiktoken's cl100k_base file: LangChain's default path runs offline."""
    try:
        folder = Path(str(resources.files("llama_index.core") / "_static" / "tiktoken_cache"))
    except ModuleNotFoundError:
        return None
    return folder if folder.is_dir() and any(folder.iterdir()) else None


def test_langchain_default_token_arrays_get_a_400_naming_the_setting(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_openai import OpenAIEmbeddings

    cache = cl100k_cache()
    if cache is None:
        pytest.skip("no offline copy of tiktoken's cl100k_base (it comes with llama-index-core)")
    monkeypatch.setitem(os.environ, "TIKTOKEN_CACHE_DIR", str(cache))
    default = OpenAIEmbeddings(model=server.name, base_url=base_url(server), api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        default.embed_documents(PASSAGES)


# -- LlamaIndex ------------------------------------------------------------------------------------------


def test_llama_index_openai_like_embedding(server: ServerProcess, local: Encoder) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    common = {"api_base": base_url(server), "api_key": KEY}
    documents = OpenAILikeEmbedding(model_name=server.name, **common)
    queries = OpenAILikeEmbedding(model_name=server.name + "-query", **common)
    served = np.array(documents.get_text_embedding_batch(PASSAGES))
    # LlamaIndex replaces every newline with a space before sending: harmless to the instruction
    # (the server adds it), but the text itself changes.
    assert_same_vectors(served, local.encode_documents([text.replace("\n", " ") for text in PASSAGES]))
    changed = local.encode_documents(PASSAGES[1:2])[0]
    assert float(served[1] @ changed) < 0.9999
    assert_same_vectors(
        np.array([queries.get_query_embedding(QUESTIONS[0])]), local.encode_queries(QUESTIONS[:1])
    )
    from_async = asyncio.run(queries.aget_query_embedding(QUESTIONS[1]))
    assert_same_vectors(np.array([from_async]), local.encode_queries(QUESTIONS[1:]))
    plain = OpenAIEmbedding(model_name=server.name, **common)
    assert_same_vectors(
        np.array([plain.get_text_embedding(PASSAGES[0])]), local.encode_documents(PASSAGES[:1])
    )
