"""Every adapter reranks with any reranker kind, with the in-process reranker's very scores.

On the session's tiny checkpoints (a BERT cross-encoder with the MiniLM vocabulary, a Qwen3-shaped
LLM reranker with the Qwen vocabulary) and all-MiniLM-L6-v2 (the embedding reranker): the LangChain
document compressor, the LlamaIndex node postprocessor, ``QZhouCollection.query``, both retrievers
and ``qzhou-plugins query --rerank-model`` give the scores of :func:`qzhou_plugins.rerank.score_candidates`
(to 1e-5) and say which scale they are on. The weights are random, so only the equality of scores
and orders is checked, never which document is relevant.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode
from pydantic import ValidationError

from qzhou_plugins import DEMO_MODEL, Encoder, ModelLoadError
from qzhou_plugins.chroma import QueryOptions, QZhouCollection
from qzhou_plugins.cli import main
from qzhou_plugins.langchain import QZhouEmbeddings, QZhouReranker, QZhouRetriever
from qzhou_plugins.llama_index import QZhouEmbedding, QZhouRerank
from qzhou_plugins.llama_index import QZhouRetriever as LlamaIndexRetriever
from qzhou_plugins.rerank import Reranker, score_candidates

TEXTS = [
    "Cats sleep between twelve and sixteen hours a day.",
    "The stock market fell sharply on Monday.",
    "Green tea is brewed with water at 70 to 80 degrees Celsius.",
    "Error code E4711 means the pump motor overheated and stopped.",
    "Dogs and cats are the most common pets.",
    "Berlin became the capital of reunified Germany in 1990.",
]
QUERY = "How long do cats sleep?"
INSTRUCTION = "Given a question about animals, find the passage that answers it"


@pytest.fixture(scope="module", params=["cross-encoder", "llm"])
def reranker_path(request: pytest.FixtureRequest) -> str:
    """The tiny checkpoint of each reranker kind that is not an embedding model."""
    name = "tiny_cross_encoder_path" if request.param == "cross-encoder" else "tiny_llm_reranker_path"
    return str(request.getfixturevalue(name))


def expected_scores(model: str, texts: list[str], **options: Any) -> np.ndarray:
    return score_candidates(Reranker.shared(model=model), QUERY, texts, empty="lowest", **options)


def documents() -> list[Document]:
    return [Document(page_content=text, id=f"d{i}", metadata={"n": i}) for i, text in enumerate(TEXTS)]


# -- LangChain ------------------------------------------------------------------------------------------


def test_langchain_compressor_scores_like_the_reranker(reranker_path: str) -> None:
    compressor = QZhouReranker(model=reranker_path, top_n=None)
    assert compressor.reranker is Reranker.shared(model=reranker_path)
    given = [*documents(), Document(page_content="  ", id="blank")]
    snapshot = copy.deepcopy(given)
    ranked = compressor.compress_documents(given, QUERY)
    expected = expected_scores(reranker_path, [d.page_content for d in given])
    assert [d.id for d in ranked] == [given[i].id for i in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose(
        [d.metadata["relevance_score"] for d in ranked], np.sort(expected)[::-1], atol=1e-5
    )
    assert {d.metadata["relevance_score_scale"] for d in ranked} == {"probability"}
    assert ranked[-1].id == "blank" and ranked[-1].metadata["relevance_score"] == 0.0  # the scale's floor
    assert given == snapshot  # the caller's documents are not touched
    kept = QZhouReranker(model=reranker_path, top_n=2, score_threshold=float(np.sort(expected)[-1]))
    assert [d.id for d in kept.compress_documents(given, QUERY)] == [ranked[0].id]


def test_llm_instruction_reaches_the_template(tiny_llm_reranker_path: str) -> None:
    compressor = QZhouReranker(model=tiny_llm_reranker_path, top_n=None, instruction=INSTRUCTION)
    scores = {d.id: d.metadata["relevance_score"] for d in compressor.compress_documents(documents(), QUERY)}
    expected = expected_scores(tiny_llm_reranker_path, TEXTS, instruction=INSTRUCTION)
    np.testing.assert_allclose([scores[f"d{i}"] for i in range(len(TEXTS))], expected, atol=1e-5)
    assert not np.allclose(expected, expected_scores(tiny_llm_reranker_path, TEXTS), atol=1e-6)


def test_embedding_reranker_shares_the_embedders_encoder(minilm: Encoder) -> None:
    compressor = QZhouReranker(model=DEMO_MODEL, top_n=None)
    assert compressor.encoder is QZhouEmbeddings(model=DEMO_MODEL).encoder is minilm
    assert compressor.reranker.kind == "embedding" and compressor.score_scale == "cosine"
    ranked = compressor.compress_documents(documents(), QUERY)
    expected = score_candidates(minilm, QUERY, TEXTS)  # the encoder as its own reranker: today's scores
    np.testing.assert_allclose(
        [d.metadata["relevance_score"] for d in ranked], np.sort(expected)[::-1], atol=1e-5
    )
    assert {d.metadata["relevance_score_scale"] for d in ranked} == {"cosine"}
    assert QZhouReranker(encoder=minilm).reranker.encoder is minilm


async def test_contextual_compression_retriever_with_a_cross_encoder(
    tiny_cross_encoder_path: str, minilm: Encoder
) -> None:
    store = InMemoryVectorStore(embedding=QZhouEmbeddings(encoder=minilm))
    store.add_documents(documents())
    retriever = ContextualCompressionRetriever(
        base_compressor=QZhouReranker(model=tiny_cross_encoder_path, top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}),
    )
    found = retriever.invoke(QUERY)
    candidates = store.similarity_search(QUERY, k=4)
    expected = expected_scores(tiny_cross_encoder_path, [d.page_content for d in candidates])
    assert [d.id for d in found] == [candidates[i].id for i in np.argsort(-expected, kind="stable")[:2]]
    np.testing.assert_allclose(
        [d.metadata["relevance_score"] for d in found], np.sort(expected)[::-1][:2], atol=1e-5
    )
    assert [d.id for d in await retriever.ainvoke(QUERY)] == [d.id for d in found]


def test_compressor_pickles_and_reattaches(tiny_cross_encoder_path: str) -> None:
    compressor = QZhouReranker(model=tiny_cross_encoder_path, top_n=2)
    data = pickle.dumps(compressor)
    assert len(data) < 10_000
    restored = pickle.loads(data)
    assert restored.reranker is compressor.reranker and restored.top_n == 2
    assert copy.deepcopy(compressor).reranker is compressor.reranker


# -- LlamaIndex -----------------------------------------------------------------------------------------


def nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=f"n{i}", text=text), score=0.5) for i, text in enumerate(TEXTS)]


def test_llama_index_postprocessor_scores_like_the_reranker(reranker_path: str) -> None:
    postprocessor = QZhouRerank(model=reranker_path, top_n=3)
    given = nodes()
    reranked = postprocessor.postprocess_nodes(given, query_str=QUERY)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in given]
    expected = expected_scores(reranker_path, texts)
    assert [n.node.node_id for n in reranked] == [f"n{i}" for i in np.argsort(-expected, kind="stable")[:3]]
    np.testing.assert_allclose([n.score for n in reranked], np.sort(expected)[::-1][:3], atol=1e-5)
    for result in reranked:
        assert result.node.metadata["relevance_score_scale"] == "probability"
        assert "relevance_score_scale" not in result.node.get_content(metadata_mode=MetadataMode.LLM)
    assert all(not n.node.metadata for n in given)  # the caller's nodes keep their metadata
    # score_threshold cuts on the reranker's own scale, as SimilarityPostprocessor: strictly below is dropped.
    second = float(np.sort(expected)[-2])
    cut = QZhouRerank(model=reranker_path, top_n=None, score_threshold=second)
    assert [n.score for n in cut.postprocess_nodes(given, query_str=QUERY)] == [n.score for n in reranked[:2]]


def test_llama_index_postprocessor_round_trips(tiny_cross_encoder_path: str, minilm: Encoder) -> None:
    postprocessor = QZhouRerank(model=tiny_cross_encoder_path, top_n=2)
    data = postprocessor.to_dict()
    assert data["model"] == tiny_cross_encoder_path and data["class_name"] == "QZhouRerank"
    assert QZhouRerank.from_dict(data).reranker is postprocessor.reranker
    assert pickle.loads(pickle.dumps(postprocessor)).reranker is postprocessor.reranker
    embedding = QZhouRerank(model=DEMO_MODEL)
    assert embedding.encoder is QZhouEmbedding(model=DEMO_MODEL).encoder is minilm
    assert embedding.postprocess_nodes(nodes()[:1], query_str=QUERY)[0].node.metadata == {
        "relevance_score_scale": "cosine"
    }


# -- bad input ------------------------------------------------------------------------------------------


def test_bad_reranker_input_is_named(tiny_cross_encoder_path: str, minilm: Encoder) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        QZhouReranker(model="/nowhere/at/all")
    with pytest.raises(ModelLoadError, match="not an LLM reranker"):
        QZhouRerank(model=tiny_cross_encoder_path, kind="llm")
    with pytest.raises(ValidationError, match="label mean"):
        QZhouReranker(model=DEMO_MODEL, label=1)
    with pytest.raises(ValidationError, match="top_n"):
        QZhouReranker(model=tiny_cross_encoder_path, top_n=0)
    with pytest.raises(TypeError, match="instruction must be a string or None, not int"):
        QZhouRerank(model=tiny_cross_encoder_path, instruction=5)
    cross_encoder = QZhouReranker(model=tiny_cross_encoder_path, instruction="Judge it")
    with pytest.raises(ValueError, match="is a cross-encoder: it takes no instruction"):
        cross_encoder.compress_documents(documents(), QUERY)
    with pytest.raises(AttributeError, match="cross-encoder reranker: it has no encoder"):
        _ = cross_encoder.encoder
    with pytest.raises(TypeError, match="reranker= or encoder=, not both"):
        QZhouReranker(encoder=minilm, reranker=cross_encoder.reranker)
    with pytest.raises(ValidationError, match=r"contradict the reranker.*model="):
        QZhouReranker(reranker=cross_encoder.reranker, model=DEMO_MODEL)


# -- the Chroma helper, the retrievers and the command line ---------------------------------------------


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, minilm: Encoder) -> QZhouCollection:
    folder = tmp_path_factory.mktemp("adapters-rerank")
    opened = QZhouCollection.open("notes", path=folder / "db", model=DEMO_MODEL)
    opened.add(
        TEXTS,
        metadatas=[{"source": f"note-{i}.txt"} for i in range(len(TEXTS))],
        ids=[f"d{i}" for i in range(len(TEXTS))],
    )
    return opened


def test_collection_reranks_the_fused_list_with_a_cross_encoder(
    collection: QZhouCollection, tiny_cross_encoder_path: str
) -> None:
    fused = collection.query(QUERY, n_results=5, mode="hybrid")[0].hits
    options = QueryOptions(n_results=3, mode="hybrid", rerank_candidates=5, reranker=tiny_cross_encoder_path)
    hits = collection.query(QUERY, options)[0].hits
    expected = expected_scores(tiny_cross_encoder_path, [hit.document for hit in fused])
    best = np.argsort(-expected, kind="stable")[:3]
    assert [hit.id for hit in hits] == [fused[i].id for i in best]
    np.testing.assert_allclose([hit.score for hit in hits], expected[best], atol=1e-5)
    assert [hit.fused_score for hit in hits] == [fused[i].fused_score for i in best]
    assert {hit.score_scale for hit in hits} == {"probability"} and fused[0].score_scale == "rrf"
    assert collection.query(QUERY, n_results=3, mode="hybrid", rerank_candidates=5,
                            reranker=Reranker.shared(model=tiny_cross_encoder_path)) == [
        collection.query(QUERY, options)[0]
    ]  # fmt: skip
    own = collection.query(QUERY, n_results=2, rerank_candidates=4)[0].hits  # today's: the collection's model
    assert {hit.score_scale for hit in own} == {"cosine"}


def test_bad_query_options_are_named(collection: QZhouCollection, tiny_cross_encoder_path: str) -> None:
    with pytest.raises(ValueError, match="reranker= is used only with rerank_candidates"):
        collection.query(QUERY, reranker=tiny_cross_encoder_path)
    with pytest.raises(
        TypeError, match="reranker must be a Reranker, an Encoder, a RerankerConfig or a model"
    ):
        collection.query(QUERY, rerank_candidates=3, reranker=3)
    with pytest.raises(ModelLoadError, match="does not exist"):
        collection.query(QUERY, rerank_candidates=3, reranker="/nowhere/at/all")
    with pytest.raises(TypeError, match=r"unknown query option\(s\) top_n; the options are"):
        collection.query(QUERY, top_n=3)
    with pytest.raises(ValueError, match="rerank_candidates must be a positive integer"):
        QueryOptions(rerank_candidates=0)


def test_retrievers_rerank_with_a_reranker(collection: QZhouCollection, tiny_llm_reranker_path: str) -> None:
    options = {"rerank_candidates": 5, "reranker": tiny_llm_reranker_path}
    expected = collection.query(QUERY, n_results=2, mode="hybrid", **options)[0].hits
    langchain = QZhouRetriever(collection=collection, k=2, **options).invoke(QUERY)
    assert [d.id for d in langchain] == [hit.id for hit in expected]
    np.testing.assert_allclose(
        [d.metadata["relevance_score"] for d in langchain], [h.score for h in expected], atol=1e-5
    )
    assert {d.metadata["relevance_score_scale"] for d in langchain} == {"probability"}
    per_call = QZhouRetriever(collection=collection, k=2).invoke(QUERY, **options)
    assert [d.id for d in per_call] == [d.id for d in langchain]
    llama = LlamaIndexRetriever(collection, similarity_top_k=2, **options).retrieve(QUERY)
    assert [n.node.node_id for n in llama] == [hit.id for hit in expected]
    np.testing.assert_allclose([n.score for n in llama], [h.score for h in expected], atol=1e-5)
    assert llama[0].node.metadata["relevance_score_scale"] == "probability"
    with pytest.raises(ModelLoadError, match="does not exist"):
        QZhouRetriever(collection=collection, rerank_candidates=3, reranker="/nowhere/at/all")


def test_cli_query_reranks_with_the_model_given(
    collection: QZhouCollection, tiny_cross_encoder_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    database = Path(collection.client.get_settings().persist_directory)
    where = ["-c", "notes", "--db", str(database)]
    code = main(
        ["query", QUERY, *where, "-k", "2", "--rerank", "5", "--rerank-model", tiny_cross_encoder_path]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = collection.query(QUERY, n_results=2, rerank_candidates=5, reranker=tiny_cross_encoder_path)[0]
    ranks = [line for line in out.splitlines() if line[:1].isdigit()]
    assert [float(line.split()[1]) for line in ranks] == [round(hit.score, 4) for hit in expected.hits]
    assert [line.split()[2] for line in ranks] == [hit.metadata["source"] for hit in expected.hits]
    assert (
        f"Scores: probability of relevance (0 to 1), reranked by {tiny_cross_encoder_path} (cross-encoder)"
        in out
    )
    assert main(["query", QUERY, *where, "--rerank-model", tiny_cross_encoder_path]) == 2
    assert "--rerank-model needs --rerank N" in capsys.readouterr().err
    assert (
        main(["query", QUERY, *where, "-k", "1", "--rerank", "2", "--rerank-model", "/nowhere/at/all"]) != 0
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["query", QUERY, *where, "-k", "1"]) == 0
    assert "Scores: cosine similarity (-1 to 1)." in capsys.readouterr().out
