"""A served model used through the remote backend: our own server on a tiny QZhou checkpoint (where the
instruction side matters), every adapter against it, equal to the model loaded here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qzhou_plugins import Encoder
from qzhou_plugins.backends.remote import RemoteBackendError
from servers import SERVER_KEY, ServerProcess, free_port

API_KEY = SERVER_KEY
TEXTS = [
    "Green tea is steamed or pan-fired soon after picking.",
    "Black tea leaves are fully oxidised before drying.",
    "绿茶的冲泡水温一般在八十度左右。",
]
QUERIES = ["How is green tea made?", "什么水温适合绿茶？"]


@pytest.fixture(scope="module")
def served(qzhou_server: ServerProcess) -> str:
    """The session's server on the tiny QZhou checkpoint, with a key: its API's base URL."""
    return qzhou_server.url + "/v1"


@pytest.fixture(scope="module")
def local(tiny_qzhou_path: str) -> Encoder:
    return Encoder.shared(model=tiny_qzhou_path)


@pytest.fixture(scope="module")
def remote(served: str, tiny_qzhou_path: str) -> Encoder:
    return Encoder.shared(model=tiny_qzhou_path, base_url=served, api_key=API_KEY)


def assert_same(got: object, expected: object) -> None:
    got, expected = np.asarray(got, dtype=np.float32), np.asarray(expected, dtype=np.float32)
    assert got.shape == expected.shape
    cosines = np.sum(got.reshape(-1, got.shape[-1]) * expected.reshape(-1, got.shape[-1]), axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_the_server_describes_its_model(remote: Encoder, local: Encoder) -> None:
    assert remote.dimension == local.dimension and remote.max_length == local.max_length
    assert remote.prefixes() == local.prefixes()  # QZhou's instructions, applied by our client
    assert remote.prefixes("sts") == local.prefixes("sts")


@pytest.mark.parametrize("task", [None, "sts", "FiQA2018"])
def test_remote_equals_local_on_both_sides(remote: Encoder, local: Encoder, task: str | None) -> None:
    assert_same(remote.encode_queries(QUERIES, task), local.encode_queries(QUERIES, task))
    assert_same(remote.encode_documents(TEXTS, task), local.encode_documents(TEXTS, task))


def test_the_query_side_really_differs(remote: Encoder) -> None:
    query, document = remote.encode_queries(QUERIES[:1]), remote.encode_documents(QUERIES[:1])
    assert float(query[0] @ document[0]) < 0.999


def test_the_api_key_comes_from_the_environment(
    served: str, tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QZHOU_API_KEY", API_KEY)
    assert Encoder(model=tiny_qzhou_path, base_url=served).encode_documents(TEXTS).shape == (3, 64)


def test_shared_encoders_never_share_a_client_across_keys(
    served: str, tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment's key is part of the configuration: after it changes, ``Encoder.shared``
    makes a new client instead of handing back the one made with the old key."""
    monkeypatch.setenv("QZHOU_API_KEY", API_KEY)
    right = Encoder.shared(model=tiny_qzhou_path, base_url=served)
    assert right.encode_documents(TEXTS).shape == (3, 64)
    monkeypatch.setenv("QZHOU_API_KEY", "wrong")
    with pytest.raises(RemoteBackendError, match=r"answered 401"):
        Encoder.shared(model=tiny_qzhou_path, base_url=served)
    monkeypatch.delenv("QZHOU_API_KEY")
    assert Encoder.shared(model=tiny_qzhou_path, base_url=served, api_key=API_KEY) is right


def test_a_wrong_key_is_a_clear_error(
    served: str, tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QZHOU_API_KEY", raising=False)
    with pytest.raises(RemoteBackendError, match=r"answered 401"):
        Encoder(model=tiny_qzhou_path, base_url=served, api_key="wrong")


def test_an_unreachable_server_is_a_clear_error(tiny_qzhou_path: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RemoteBackendError, match=r"cannot be reached after 5 tries"):
        Encoder(model=tiny_qzhou_path, base_url=url, retry_backoff=0.01)


def test_local_options_are_refused_beside_a_base_url(served: str, tiny_qzhou_path: str) -> None:
    with pytest.raises(ValueError, match="device decide"):
        Encoder(model=tiny_qzhou_path, base_url=served, device="cpu")


def test_langchain_through_the_server(served: str, tiny_qzhou_path: str) -> None:
    from langchain_core.documents import Document

    from qzhou_plugins.langchain import QZhouEmbeddings, QZhouReranker

    options = {"model": tiny_qzhou_path, "base_url": served, "api_key": API_KEY}
    for task in ("retrieval", "sts"):
        remote, local = (
            QZhouEmbeddings(**options, task=task),
            QZhouEmbeddings(model=tiny_qzhou_path, task=task),
        )
        assert_same(remote.embed_query(QUERIES[0]), local.embed_query(QUERIES[0]))
        assert_same(remote.embed_documents(TEXTS), local.embed_documents(TEXTS))
    documents = [Document(page_content=text) for text in TEXTS]
    remote_ranked = QZhouReranker(**options, top_n=3).compress_documents(documents, QUERIES[0])
    local_ranked = QZhouReranker(model=tiny_qzhou_path, top_n=3).compress_documents(documents, QUERIES[0])
    assert [d.page_content for d in remote_ranked] == [d.page_content for d in local_ranked]
    assert "api_key" not in repr(QZhouEmbeddings(**options)) and API_KEY not in repr(
        QZhouEmbeddings(**options)
    )


async def test_async_langchain_calls_are_concurrent_requests(served: str, tiny_qzhou_path: str) -> None:
    import asyncio

    from qzhou_plugins.langchain import QZhouEmbeddings

    remote = QZhouEmbeddings(model=tiny_qzhou_path, base_url=served, api_key=API_KEY)
    local = QZhouEmbeddings(model=tiny_qzhou_path)
    texts = [f"{TEXTS[i % 3]} ({i})" for i in range(40)]
    vectors = await asyncio.gather(*(remote.aembed_query(text) for text in texts))
    assert_same(vectors, [local.embed_query(text) for text in texts])


def test_llama_index_through_the_server(served: str, tiny_qzhou_path: str) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from qzhou_plugins.llama_index import QZhouEmbedding, QZhouRerank

    remote = QZhouEmbedding(model=tiny_qzhou_path, base_url=served, api_key=API_KEY)
    local = QZhouEmbedding(model=tiny_qzhou_path)
    assert_same(remote.get_query_embedding(QUERIES[0]), local.get_query_embedding(QUERIES[0]))
    assert_same(remote.get_text_embedding_batch(TEXTS), local.get_text_embedding_batch(TEXTS))
    assert API_KEY not in str(remote.to_dict())
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in TEXTS]
    by_remote = QZhouRerank(encoder=remote.encoder, top_n=2).postprocess_nodes(nodes, query_str=QUERIES[0])
    by_local = QZhouRerank(encoder=local.encoder, top_n=2).postprocess_nodes(nodes, query_str=QUERIES[0])
    assert [n.node.get_content() for n in by_remote] == [n.node.get_content() for n in by_local]


def test_evaluation_through_the_server(remote: Encoder, local: Encoder, tmp_path: Path) -> None:
    from qzhou_plugins.evaluation import SentencePair, evaluate_sts

    pairs = [
        SentencePair(a, b, float(i)) for i, (a, b) in enumerate(zip(TEXTS, [*QUERIES, TEXTS[0]], strict=True))
    ]
    assert evaluate_sts(remote, pairs).spearman == pytest.approx(evaluate_sts(local, pairs).spearman)


def test_a_remote_only_process_never_imports_torch(served: str, tiny_qzhou_path: str) -> None:
    """Embedding through a served model, directly and through the LangChain adapter (sync and
    async), needs no local runtime."""
    from test_imports import heavy_modules_after

    code = (
        "import asyncio\nfrom qzhou_plugins import Encoder\n"
        f"options = dict(model={tiny_qzhou_path!r}, base_url={served!r}, api_key={API_KEY!r})\n"
        "assert Encoder(**options).encode_queries(['green tea']).shape[0] == 1\n"
        "from qzhou_plugins.langchain import QZhouEmbeddings\nembeddings = QZhouEmbeddings(**options)\n"
        "assert len(embeddings.embed_documents(['green tea'])) == 1\n"
        "assert len(asyncio.run(embeddings.aembed_query('green tea'))) > 0"
    )
    heavy = heavy_modules_after(code)
    assert "torch" not in heavy and "transformers" not in heavy, heavy


async def test_many_concurrent_async_calls_equal_the_sync_path(remote: Encoder) -> None:
    """Hundreds of calls in flight at once on one loop's session (single queries, small lists and one
    list split into several requests), each getting its own rows: those of the sync path."""
    import asyncio

    from qzhou_plugins.langchain import QZhouEmbeddings

    embeddings = QZhouEmbeddings(encoder=remote)
    queries = [f"{QUERIES[i % 2]} ({i})" for i in range(64)]
    lists = [[f"{TEXTS[(i + j) % 3]} [{i}.{j}]" for j in range(i % 4 + 1)] for i in range(24)]
    long = [f"{TEXTS[i % 3]} <{i}>" for i in range(130)]  # 3 requests of at most 64 texts
    answers = await asyncio.gather(
        *(embeddings.aembed_query(query) for query in queries),
        *(remote.aencode_documents(texts) for texts in lists),
        remote.aencode_documents(long),
    )
    assert_same(answers[: len(queries)], remote.encode_queries(queries))
    for texts, rows in zip(lists, answers[len(queries) : -1], strict=True):
        assert_same(rows, remote.encode_documents(texts))
    assert_same(answers[-1], remote.encode_documents(long))
