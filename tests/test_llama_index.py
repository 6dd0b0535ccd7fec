"""The LlamaIndex adapter: QZhouEmbedding and QZhouRerank against the core, inside LlamaIndex itself.

Retrieval correctness is checked at scale on all-MiniLM-L6-v2 (a real model, by its demo name as users
write it) over 1,000 SciFact abstracts; sides and instructions on the tiny QZhou-shaped checkpoint,
where an instruction on the wrong side changes the vector. Expected vectors come from the core, and
for the QZhou prompt format from strings written out here, so a wrong prefix cannot agree with itself.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.storage.kvstore import SimpleKVStore

from conftest import REPO, document_text
from qzhou_plugins import DEMO_MODEL, Encoder, Task, UnknownTaskError, loaded_models, published_tasks
from qzhou_plugins.config import EncoderConfig
from qzhou_plugins.llama_index import QZhouEmbedding, QZhouRerank
from qzhou_plugins.rerank import LOWEST_SCORE, score_candidates

RETRIEVAL_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
STS_INSTRUCTION = "Retrieve semantically similar text"
CORPUS_SIZE = 1000
QUERY_COUNT = 50
TOP_K = 10
TIE = 1e-5
"""Two cosines closer than this are a tie: their order may differ between two batch layouts."""


def encode_prefixed(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Vectors of texts that already carry their prefixes: the core with no prefix of its own."""
    return encoder.encode_with_prefix(texts, "")


def qzhou_prompt(instruction: str) -> str:
    """The QZhou prompt format, written out from the model facts rather than taken from the core."""
    return f"Instruct: {instruction}\nQuery: "


class EventRecorder(BaseEventHandler):
    """Keeps every instrumentation event (LlamaIndex swallows handler errors, so tests read the list)."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, kind: type[BaseEvent]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


@pytest.fixture
def recorder() -> Iterator[EventRecorder]:
    root = get_dispatcher()
    handler = EventRecorder()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


# -- retrieval at scale: 1,000 SciFact abstracts --------------------------------------------------------


class SciFactIndex:
    """An index built once per module; the exact search it is compared with uses the core's vectors.

    Embedding 1,000 abstracts is the expensive part, so it is done once, by the index. The vectors the
    index stored are checked against the core's document vectors on a random tenth of the corpus
    (encoded in another batch layout), and the exact search uses the core's query vectors.
    """

    def __init__(
        self, corpus: list[dict[str, str]], queries: list[dict[str, str]], vector_cache: Path
    ) -> None:
        documents = corpus[:CORPUS_SIZE]
        self.ids = [document["_id"] for document in documents]
        self.texts = [document_text(document) for document in documents]
        self.queries = [query["text"] for query in queries[:QUERY_COUNT]]
        # The session's SciFact vector cache: the whole-corpus tests may have computed these already.
        self.embed_model = QZhouEmbedding(model=DEMO_MODEL, cache_dir=str(vector_cache))
        nodes = [TextNode(id_=doc_id, text=text) for doc_id, text in zip(self.ids, self.texts, strict=True)]
        handler = EventRecorder()
        root = get_dispatcher()
        root.add_event_handler(handler)
        try:
            self.index = VectorStoreIndex(nodes, embed_model=self.embed_model)
        finally:
            root.event_handlers.remove(handler)
        self.ingestion_calls = handler.of(EmbeddingEndEvent)
        stored = self.index.vector_store.data.embedding_dict  # SimpleVectorStore
        self.document_vectors = np.array([stored[doc_id] for doc_id in self.ids], dtype=np.float32)
        self.query_vectors = self.embed_model.encoder.encode_queries(self.queries)

    def exact(self, query_number: int) -> tuple[list[str], np.ndarray]:
        """Exact top-k by cosine, and the cosine of every document."""
        scores = self.document_vectors @ self.query_vectors[query_number]
        order = np.argsort(-scores, kind="stable")[:TOP_K]
        return [self.ids[i] for i in order], scores


@pytest.fixture(scope="module")
def scifact_index(
    scifact_corpus: list[dict[str, str]], scifact_queries: list[dict[str, str]], scifact_vector_cache: Path
) -> SciFactIndex:
    return SciFactIndex(scifact_corpus, scifact_queries, scifact_vector_cache)


def assert_same_ranking(
    scifact_index: SciFactIndex, query_number: int, retrieved: list[NodeWithScore]
) -> None:
    exact_ids, all_scores = scifact_index.exact(query_number)
    score_of = dict(zip(scifact_index.ids, all_scores.tolist(), strict=True))
    got_ids = [result.node.node_id for result in retrieved]
    assert len(got_ids) == TOP_K
    np.testing.assert_allclose(
        [result.score for result in retrieved], [score_of[i] for i in exact_ids], atol=TIE
    )
    for position, (got, want) in enumerate(zip(got_ids, exact_ids, strict=True)):
        if got != want:  # allowed only between documents tied to within TIE
            assert abs(score_of[got] - score_of[want]) < TIE, (
                f"query {query_number}, rank {position}: retrieved {got} ({score_of[got]:.6f}), "
                f"exact search has {want} ({score_of[want]:.6f})"
            )


def test_ingestion_hands_the_whole_batch_to_the_core(scifact_index: SciFactIndex) -> None:
    """One embedding call for 1,000 nodes: the core, not LlamaIndex, decides the forward batches."""
    assert [len(event.chunks) for event in scifact_index.ingestion_calls] == [CORPUS_SIZE]


def test_index_stores_the_core_document_vectors(scifact_index: SciFactIndex) -> None:
    sample = sorted(random.Random(4).sample(range(CORPUS_SIZE), CORPUS_SIZE // 10), reverse=True)
    expected = scifact_index.embed_model.encoder.encode_documents([scifact_index.texts[i] for i in sample])
    np.testing.assert_allclose(scifact_index.document_vectors[sample], expected, atol=1e-6)


def test_retriever_top10_equals_exact_search(scifact_index: SciFactIndex) -> None:
    retriever = scifact_index.index.as_retriever(similarity_top_k=TOP_K)
    for number, query in enumerate(scifact_index.queries):
        assert_same_ranking(scifact_index, number, retriever.retrieve(query))


async def test_aretrieve_top10_equals_exact_search(scifact_index: SciFactIndex) -> None:
    retriever = scifact_index.index.as_retriever(similarity_top_k=TOP_K)
    for number, query in enumerate(scifact_index.queries):
        assert_same_ranking(scifact_index, number, await retriever.aretrieve(query))


# -- sides and instructions ----------------------------------------------------------------------------

QUERIES = ["what causes rain", "是什么导致了下雨"]
TEXTS = [
    "Rain forms when water vapour condenses into droplets heavy enough to fall.",
    "Stock markets fell sharply on Monday.",
    "降雨是水蒸气凝结成足够重的水滴后落下形成的。",
]


def assert_vectors(got: list[list[float]] | list[float], expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32).reshape(expected.shape), expected, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_qzhou_path: str) -> Encoder:
    return Encoder.shared(model=tiny_qzhou_path)


def test_retrieval_instructs_the_query_side_only(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, task="retrieval")
    assert embed_model.encoder is tiny_encoder
    prompted = [qzhou_prompt(RETRIEVAL_INSTRUCTION) + query for query in QUERIES]
    for query, expected in zip(QUERIES, encode_prefixed(tiny_encoder, prompted), strict=True):
        assert_vectors(embed_model.get_query_embedding(query), expected)
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), encode_prefixed(tiny_encoder, TEXTS))
    assert_vectors(embed_model.get_text_embedding(TEXTS[0]), encode_prefixed(tiny_encoder, TEXTS[:1])[0])
    # the same string differs by side: the instruction is really there on one side only
    query_side = np.array(embed_model.get_query_embedding(TEXTS[0]))
    document_side = np.array(embed_model.get_text_embedding(TEXTS[0]))
    assert float(query_side @ document_side) < 0.99


def test_default_task_is_retrieval_for_qzhou(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path)
    assert_vectors(embed_model.get_query_embedding(QUERIES[0]), tiny_encoder.encode_queries(QUERIES[:1])[0])
    assert_vectors(
        embed_model.get_query_embedding(QUERIES[0]),
        encode_prefixed(tiny_encoder, [qzhou_prompt(RETRIEVAL_INSTRUCTION) + QUERIES[0]])[0],
    )
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), tiny_encoder.encode_documents(TEXTS))


@pytest.mark.parametrize("task", ["sts", "STSBenchmark"])
def test_symmetric_task_instructs_both_sides(tiny_qzhou_path: str, tiny_encoder: Encoder, task: str) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, task=task)
    instruction = STS_INSTRUCTION if task == "sts" else published_tasks()[task].instruction
    assert instruction and published_tasks()["STSBenchmark"].both_sides
    expected = encode_prefixed(tiny_encoder, [qzhou_prompt(instruction) + text for text in TEXTS])
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), expected)
    assert_vectors([embed_model.get_query_embedding(text) for text in TEXTS], expected)
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), tiny_encoder.encode_documents(TEXTS, task))


def test_custom_instruction_goes_on_the_query_side(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    instruction = "Given a scientific claim, retrieve documents that support or refute it"
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, task=instruction)
    assert_vectors(
        embed_model.get_query_embedding(QUERIES[0]),
        encode_prefixed(tiny_encoder, [qzhou_prompt(instruction) + QUERIES[0]])[0],
    )
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), encode_prefixed(tiny_encoder, TEXTS))


def test_explicit_instructions_override_the_task_per_side(
    tiny_qzhou_path: str, tiny_encoder: Encoder
) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, task="sts", query_instruction="Find the answer")
    assert_vectors(
        embed_model.get_query_embedding(QUERIES[0]),
        encode_prefixed(tiny_encoder, [qzhou_prompt("Find the answer") + QUERIES[0]])[0],
    )
    sts_prompted = [qzhou_prompt(STS_INSTRUCTION) + text for text in TEXTS]
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), encode_prefixed(tiny_encoder, sts_prompted))
    embed_model.query_instruction = ""  # '' means no instruction at all, not "the task's"
    assert_vectors(embed_model.get_query_embedding(QUERIES[0]), encode_prefixed(tiny_encoder, QUERIES[:1])[0])
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, task="sts", document_instruction="")
    assert_vectors(embed_model.get_text_embedding_batch(TEXTS), encode_prefixed(tiny_encoder, TEXTS))
    assert_vectors(
        embed_model.get_query_embedding(TEXTS[0]), encode_prefixed(tiny_encoder, sts_prompted[:1])[0]
    )
    with pytest.raises(ValueError, match="would be ignored"):
        QZhouEmbedding(model=tiny_qzhou_path, task="sts", query_instruction="a", document_instruction="b")


async def test_async_twins_match_the_sync_methods(tiny_qzhou_path: str) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, task="retrieval")
    assert_vectors(
        await embed_model.aget_query_embedding(QUERIES[1]),
        np.array(embed_model.get_query_embedding(QUERIES[1])),
    )
    assert_vectors(
        await embed_model.aget_text_embedding(TEXTS[2]), np.array(embed_model.get_text_embedding(TEXTS[2]))
    )
    embed_model.embed_batch_size = 2  # several concurrent batches, results still in the caller's order
    assert_vectors(
        await embed_model.aget_text_embedding_batch(TEXTS),
        np.array(embed_model.get_text_embedding_batch(TEXTS)),
    )


def test_minilm_takes_no_instruction_by_default(minilm_path: str) -> None:
    """all-MiniLM-L6-v2 was trained without instructions: the default task adds none on either side."""
    embed_model = QZhouEmbedding(model=DEMO_MODEL)
    encoder = embed_model.encoder
    assert_vectors(embed_model.get_query_embedding(TEXTS[0]), encode_prefixed(encoder, TEXTS[:1])[0])
    assert_vectors(embed_model.get_text_embedding(TEXTS[0]), encode_prefixed(encoder, TEXTS[:1])[0])
    by_path = QZhouEmbedding(model=minilm_path)  # the packaged copy: same weights, not a second load
    assert by_path.encoder.backend.loaded is encoder.backend.loaded


# -- construction, bad input, serialisation ---------------------------------------------------------------


def test_model_and_model_name_stay_in_step(tiny_qzhou_path: str) -> None:
    assert QZhouEmbedding(model=tiny_qzhou_path).model_name == tiny_qzhou_path
    assert QZhouEmbedding(model_name=tiny_qzhou_path).model == tiny_qzhou_path
    with pytest.raises(ValueError, match="disagree"):
        QZhouEmbedding(model=tiny_qzhou_path, model_name=DEMO_MODEL)
    embed_model = QZhouEmbedding(model=tiny_qzhou_path)
    with pytest.raises(ValueError, match="frozen"):
        embed_model.model = DEMO_MODEL
    with pytest.raises(ValueError, match="frozen"):
        embed_model.model_name = DEMO_MODEL


def test_without_llama_index_the_core_imports_and_the_adapter_says_what_to_install() -> None:
    script = (
        "import sys\n"
        "sys.modules['llama_index'] = None  # as if llama-index-core were not installed\n"
        "import qzhou_plugins\n"
        "try:\n"
        "    import qzhou_plugins.llama_index\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pip install 'qzhou-plugins[llama-index]'" in done.stdout


def test_every_encoder_option_is_a_field() -> None:
    for component in (QZhouEmbedding, QZhouRerank):
        assert set(EncoderConfig.model_fields) <= set(component.model_fields)


def test_embed_batch_size_lets_a_whole_index_insert_batch_through(tiny_qzhou_path: str) -> None:
    assert QZhouEmbedding(model=tiny_qzhou_path).embed_batch_size == 2048


def test_bad_input_gets_a_clear_error(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    with pytest.raises(UnknownTaskError, match="STSBenchmark"):
        QZhouEmbedding(model=tiny_qzhou_path, task="STSBenchmrk")
    embed_model = QZhouEmbedding(model=tiny_qzhou_path)
    with pytest.raises(ValueError, match=r"position\(s\) 1"):
        embed_model.get_text_embedding_batch(["fine", "   ", "fine too"])
    with pytest.raises(ValueError, match="query must not be empty"):
        embed_model.get_query_embedding("")
    with pytest.raises(ValueError, match="contradict"):
        QZhouEmbedding(encoder=tiny_encoder, batch_tokens=7)
    with pytest.raises(TypeError, match="Encoder"):
        QZhouRerank(encoder=embed_model)  # type: ignore[arg-type]


def test_to_dict_from_dict_round_trip(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    original = QZhouEmbedding(model=tiny_qzhou_path, task="STSBenchmark", batch_tokens=4096)
    data = original.to_dict()
    assert data["class_name"] == "QZhouEmbedding"
    assert data["model"] == data["model_name"] == tiny_qzhou_path
    assert not any(isinstance(value, Encoder) for value in data.values())
    models_before = len(loaded_models())
    restored = QZhouEmbedding.from_dict(data)
    assert restored.encoder is original.encoder  # reattached to the shared one
    assert len(loaded_models()) == models_before
    assert_vectors(
        restored.get_query_embedding(QUERIES[0]), np.array(original.get_query_embedding(QUERIES[0]))
    )
    assert_vectors(
        restored.get_text_embedding_batch(TEXTS), np.array(original.get_text_embedding_batch(TEXTS))
    )
    assert QZhouEmbedding.from_json(original.to_json()).to_dict() == data


def test_a_private_encoder_round_trips_onto_the_same_weights(tiny_qzhou_path: str) -> None:
    private = Encoder(model=tiny_qzhou_path, batch_tokens=1024)
    embed_model = QZhouEmbedding(encoder=private)
    assert embed_model.encoder is private and embed_model.batch_tokens == 1024
    models_before = len(loaded_models())
    restored = QZhouEmbedding.from_dict(embed_model.to_dict())
    assert restored.encoder.config == private.config
    assert len(loaded_models()) == models_before
    assert_vectors(
        restored.get_text_embedding_batch(TEXTS), np.array(embed_model.get_text_embedding_batch(TEXTS))
    )


def test_pickle_carries_the_settings_not_the_weights(
    tiny_qzhou_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker processes (IngestionPipeline(num_workers=...)) pickle the embedding model."""
    task = Task(name="claims", instruction="Given a claim, find the evidence", both_sides=False)
    original = QZhouEmbedding(model=tiny_qzhou_path, task=task)
    with caplog.at_level(logging.WARNING):
        data = pickle.dumps(original)
    assert len(data) < 10_000 and "unpickleable" not in caplog.text
    restored = pickle.loads(data)
    assert restored.encoder is original.encoder and restored.task == task
    assert_vectors(
        restored.get_query_embedding(QUERIES[0]), np.array(original.get_query_embedding(QUERIES[0]))
    )
    assert QZhouEmbedding.from_dict(original.to_dict()).task == task
    reranker = QZhouRerank(encoder=original.encoder, top_n=1)
    assert pickle.loads(pickle.dumps(reranker)).encoder is original.encoder


def test_embedding_cache_serves_repeated_texts(tiny_qzhou_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path, embeddings_cache=SimpleKVStore())
    calls: list[int] = []
    encode_with_prefix = embed_model.encoder.encode_with_prefix

    def counting(texts: list[str], prefix: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(texts))
        return encode_with_prefix(texts, prefix, **kwargs)

    monkeypatch.setattr(embed_model.encoder, "encode_with_prefix", counting)
    first = embed_model.get_text_embedding_batch(TEXTS)
    second = embed_model.get_text_embedding_batch([*TEXTS, "A new text about clouds."])
    assert calls == [len(TEXTS), 1]
    np.testing.assert_allclose(second[: len(TEXTS)], first, atol=0)


def test_embedding_events_fire(tiny_qzhou_path: str, recorder: EventRecorder) -> None:
    embed_model = QZhouEmbedding(model=tiny_qzhou_path)
    embed_model.get_query_embedding(QUERIES[0])
    embed_model.get_text_embedding_batch(TEXTS)
    starts, ends = recorder.of(EmbeddingStartEvent), recorder.of(EmbeddingEndEvent)
    assert len(starts) == len(ends) == 2
    assert starts[0].model_dict["class_name"] == "QZhouEmbedding"
    assert starts[0].model_dict["model_name"] == tiny_qzhou_path
    assert ends[0].chunks == [QUERIES[0]] and ends[1].chunks == TEXTS


# -- reranking --------------------------------------------------------------------------------------------

RAIN_QUERY = "How does rain form?"
RERANK_TEXTS = [
    "The stock market closed higher after the central bank's announcement.",
    "Clouds are made of tiny water droplets or ice crystals suspended in the air.",
    "A recipe for lemon cake with a sugar glaze.",
    "Rain forms when cloud droplets merge until they are heavy enough to fall to the ground.",
    "Football results from the weekend's matches.",
]


def rain_nodes() -> list[NodeWithScore]:
    """Retrieval-ordered candidates with made-up retrieval scores (the reranker must replace them)."""
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=text), score=1.0 - i / 10)
        for i, text in enumerate(RERANK_TEXTS)
    ]


def test_rerank_reorders_keeps_top_n_and_sets_scores() -> None:
    embed_model = QZhouEmbedding(model=DEMO_MODEL)
    models_before = len(loaded_models())
    reranker = QZhouRerank(model=DEMO_MODEL, top_n=2)
    assert reranker.encoder is embed_model.encoder and len(loaded_models()) == models_before
    nodes = rain_nodes()
    reranked = reranker.postprocess_nodes(nodes, query_str=RAIN_QUERY)
    expected = score_candidates(embed_model.encoder, RAIN_QUERY, RERANK_TEXTS, task="reranking")
    assert [result.node.node_id for result in reranked] == ["n3", "n1"]
    np.testing.assert_allclose([result.score for result in reranked], expected[[3, 1]], atol=1e-6)
    assert reranked[0].score > reranked[1].score > float(np.sort(expected)[-3])
    assert [node.score for node in nodes] == [1.0 - i / 10 for i in range(len(nodes))]  # inputs untouched
    everything = QZhouRerank(model=DEMO_MODEL, top_n=None).postprocess_nodes(
        rain_nodes(), query_bundle=QueryBundle(RAIN_QUERY)
    )
    assert [result.score for result in everything] == sorted(expected.tolist(), reverse=True)
    assert len(loaded_models()) == models_before


async def test_rerank_from_an_existing_encoder_and_async() -> None:
    encoder = QZhouEmbedding(model=DEMO_MODEL).encoder
    reranker = QZhouRerank(encoder=encoder, top_n=3)
    assert reranker.encoder is encoder and reranker.model == DEMO_MODEL
    sync = reranker.postprocess_nodes(rain_nodes(), query_str=RAIN_QUERY)
    asynchronous = await reranker.apostprocess_nodes(rain_nodes(), query_str=RAIN_QUERY)
    assert [(n.node.node_id, n.score) for n in asynchronous] == [(n.node.node_id, n.score) for n in sync]


def test_rerank_scores_the_text_as_llamaindex_embeds_it() -> None:
    node = TextNode(
        id_="paper",
        text="Droplets grow by collision and coalescence.",
        metadata={"title": "How rain forms", "file_path": "/private/notes/rain.txt"},
        excluded_embed_metadata_keys=["file_path"],
    )
    embed_text = node.get_content(metadata_mode=MetadataMode.EMBED)
    assert "How rain forms" in embed_text and "/private" not in embed_text
    reranker = QZhouRerank(model=DEMO_MODEL)
    [result] = reranker.postprocess_nodes([NodeWithScore(node=node, score=0.0)], query_str=RAIN_QUERY)
    with_metadata = score_candidates(reranker.encoder, RAIN_QUERY, [embed_text])[0]
    text_only = score_candidates(reranker.encoder, RAIN_QUERY, [node.text])[0]
    assert result.score == pytest.approx(float(with_metadata), abs=1e-6)
    assert abs(with_metadata - text_only) > 1e-3


def test_rerank_needs_a_query_and_survives_an_empty_node() -> None:
    reranker = QZhouRerank(model=DEMO_MODEL, top_n=None)
    with pytest.raises(ValueError, match="needs the query"):
        reranker.postprocess_nodes(rain_nodes())
    with pytest.raises(ValueError, match="query must not be empty"):
        reranker.postprocess_nodes(rain_nodes(), query_str="  ")
    nodes = [NodeWithScore(node=TextNode(id_="empty", text=""), score=0.9), *rain_nodes()]
    reranked = reranker.postprocess_nodes(nodes, query_str=RAIN_QUERY)
    assert reranked[-1].node.node_id == "empty" and reranked[-1].score == LOWEST_SCORE
    assert reranker.postprocess_nodes([], query_str=RAIN_QUERY) == []


def test_rerank_events_fire(recorder: EventRecorder) -> None:
    reranker = QZhouRerank(model=DEMO_MODEL, top_n=2)
    reranked = reranker.postprocess_nodes(rain_nodes(), query_str=RAIN_QUERY)
    [start], [end] = recorder.of(ReRankStartEvent), recorder.of(ReRankEndEvent)
    assert start.top_n == 2 and start.model_name == DEMO_MODEL and len(start.nodes) == len(RERANK_TEXTS)
    assert start.query.query_str == RAIN_QUERY
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in reranked]


def test_rerank_round_trips_through_to_dict() -> None:
    reranker = QZhouRerank(model=DEMO_MODEL, top_n=3, task="MindSmallReranking")
    data = reranker.to_dict()
    assert data["class_name"] == "QZhouRerank" and data["top_n"] == 3 and data["task"] == "MindSmallReranking"
    restored = QZhouRerank.from_dict(data)
    assert restored.encoder is reranker.encoder
    first = reranker.postprocess_nodes(rain_nodes(), query_str=RAIN_QUERY)
    again = restored.postprocess_nodes(rain_nodes(), query_str=RAIN_QUERY)
    assert [(n.node.node_id, n.score) for n in again] == [(n.node.node_id, n.score) for n in first]


async def test_query_engine_with_rerank_and_mock_llm() -> None:
    embed_model = QZhouEmbedding(model=DEMO_MODEL)
    nodes = [TextNode(id_=f"n{i}", text=text) for i, text in enumerate(RERANK_TEXTS)]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    models_before = len(loaded_models())
    reranker = QZhouRerank(encoder=embed_model.encoder, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=4), llm=MockLLM(max_tokens=8), node_postprocessors=[reranker]
    )
    expected = reranker.postprocess_nodes(
        index.as_retriever(similarity_top_k=4).retrieve(RAIN_QUERY), query_str=RAIN_QUERY
    )
    for response in (engine.query(RAIN_QUERY), await engine.aquery(RAIN_QUERY)):
        assert str(response)  # MockLLM answered from the reranked context
        assert [(n.node.node_id, n.score) for n in response.source_nodes] == [
            (n.node.node_id, n.score) for n in expected
        ]
    assert expected[0].node.node_id == "n3"
    assert len(loaded_models()) == models_before


# -- the example notebook ---------------------------------------------------------------------------------

NOTEBOOK = REPO / "examples" / "llamaindex_rag.ipynb"


@pytest.mark.parametrize("data", ["scifact", "example documents"])
def test_example_notebook_executes(data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs with the ``python3`` kernel of this interpreter (ipykernel), as in a fresh CI venv."""
    from nbclient import NotebookClient

    if data == "scifact":
        from conftest import shared_data

        shared_data("scifact")
    else:  # an empty data folder: the notebook falls back to the notes in examples/documents/
        monkeypatch.setenv("QZHOU_SHARED_DATA", str(tmp_path / "no-data"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)\nprint(DATA_SOURCE)"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    executable, source = notebook.cells[-1].outputs[0]["text"].split()
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    assert source == data.split()[-1]
