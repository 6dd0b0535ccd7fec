"""Chroma integration: the persisted embedding function and the QZhouCollection helper.

:class:`CollectionSuite` holds what must hold on any Chroma client; :class:`TestEmbeddedCollection`
runs it on an embedded ``PersistentClient`` and ``test_chroma_server.py`` on a ``chroma run`` server.
The other tests (the embedding function itself, search quality, interoperability with LangChain and
LlamaIndex, the example notebook) run on the embedded client only.

Models: all-MiniLM-L6-v2 (real weights, under the offline demo name :data:`qzhou_plugins.DEMO_MODEL`,
no instructions) and the tiny random QZhou-shaped checkpoint (instructed queries, left padding).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.utils.embedding_functions import known_embedding_functions

import qzhou_plugins
from chroma_child import connect
from conftest import document_text
from qzhou_plugins import DEMO_MODEL, Encoder, Task, UnknownTaskError
from qzhou_plugins.chroma import (
    AddResult,
    CollectionMismatchError,
    CollectionNotFoundError,
    QZhouCollection,
    QZhouEmbeddingFunction,
    content_id,
)
from qzhou_plugins.rerank import score_candidates
from qzhou_plugins.testing import build_qzhou_checkpoint

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("chroma_child.py")
CRASH_CORPUS_SIZE = 2000
CRASH_MAX_LENGTH = 128
"""Tokens embedded per abstract in the crash test: a third of an average abstract, for speed."""

TEXTS = [
    "The cat slept on the warm windowsill all afternoon.",
    "Dogs are loyal companions and love long walks in the park.",
    "Paris is the capital and largest city of France.",
    "Berlin became the capital of reunified Germany in 1990.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Mitochondria produce most of the chemical energy that powers a cell.",
    "The stock market fell sharply after the interest rate announcement.",
    "Central banks raise interest rates to slow down inflation.",
    "A transformer model encodes text with self-attention layers.",
    "Gradient descent minimises a loss function step by step.",
    "Mount Everest is the highest mountain above sea level.",
    "The Amazon is the largest tropical rainforest on Earth.",
]
TOPICS = ["pets", "pets", "cities", "cities", "biology", "biology", "finance", "finance", "ml", "ml",
          "geography", "geography"]  # fmt: skip
QUERIES = ["Where does the cat sleep?", "Which city is the capital of France?", "How do plants use light?",
           "Why do central banks change interest rates?"]  # fmt: skip
OTHER_INSTRUCTION = "Given a legal question, retrieve the statute that answers it"


def unique_name(prefix: str = "test") -> str:
    """Collection names are unique per test, because the server suite shares one server."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run_child(command: str, payload: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(CHILD), command, json.dumps(payload)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        pytest.fail(f"child `{command}` failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    results = [line for line in completed.stdout.splitlines() if line.startswith("result ")]
    return json.loads(results[-1].removeprefix("result "))


def snapshot(collection: Collection) -> dict[str, Any]:
    """Everything a mismatch must leave as it was: records, vectors, configuration, metadata."""
    found = collection.get(include=["documents", "metadatas", "embeddings"])
    rows = zip(found["ids"], found["documents"], found["metadatas"], found["embeddings"], strict=True)
    records, vectors = {}, {}
    for id_, document, metadata, vector in rows:
        records[id_] = (document, metadata)
        vectors[id_] = np.asarray(vector)
    return {
        "records": records,
        "vectors": vectors,
        "configuration": collection.configuration_json,
        "metadata": collection.metadata,
    }


def assert_same_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["records"] == before["records"]
    assert after["configuration"] == before["configuration"]
    assert after["metadata"] == before["metadata"]
    assert after["vectors"].keys() == before["vectors"].keys()
    for id_, vector in before["vectors"].items():
        np.testing.assert_array_equal(after["vectors"][id_], vector)


def stored_vectors(collection: Collection, ids: list[str]) -> np.ndarray:
    found = collection.get(ids=ids, include=["embeddings"])
    by_id = dict(zip(found["ids"], found["embeddings"], strict=True))
    return np.asarray([by_id[id_] for id_ in ids], dtype=np.float32)


def fill(collection: QZhouCollection) -> list[str]:
    """Add TEXTS with their topics; returns their ids in TEXTS order."""
    metadatas = [{"topic": topic} for topic in TOPICS]
    assert collection.add(TEXTS, metadatas) == AddResult(added=len(TEXTS), skipped=0)
    return [content_id(text, metadata) for text, metadata in zip(TEXTS, metadatas, strict=True)]


@pytest.fixture(scope="session")
def crash_records(scifact_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """The crash test's records: the first 2,000 SciFact abstracts, as chroma_child.py reads them."""
    from chroma_child import scifact_records

    return list(scifact_records(str(scifact_dir / "corpus.jsonl"), CRASH_CORPUS_SIZE))


_CLEAN_INGESTIONS: dict[str, dict[str, np.ndarray]] = {}


@pytest.fixture(scope="session")
def clean_ingestion(
    tmp_path_factory: pytest.TempPathFactory, tiny_qzhou_path: str, crash_records: list[tuple[str, dict]]
) -> dict[str, np.ndarray]:
    """Vectors by id of an uninterrupted ingestion of the crash test's records.

    test_chroma_server.py imports this fixture, which makes it a second fixture of the session: the
    module-level memo lets both suites share one ingestion.
    """
    if tiny_qzhou_path not in _CLEAN_INGESTIONS:
        client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("clean-ingestion")))
        collection = QZhouCollection.open(
            "clean", client=client, model=tiny_qzhou_path, max_length=CRASH_MAX_LENGTH
        )
        texts, metadatas = zip(*crash_records, strict=True)
        assert collection.add(list(texts), list(metadatas), show_progress=False).added == CRASH_CORPUS_SIZE
        found = collection.collection.get(include=["embeddings"])
        vectors = zip(found["ids"], found["embeddings"], strict=True)
        _CLEAN_INGESTIONS[tiny_qzhou_path] = {id_: np.asarray(vector) for id_, vector in vectors}
    return _CLEAN_INGESTIONS[tiny_qzhou_path]


class CollectionSuite:
    """The helper's contract on one kind of client (the ``client_spec`` fixture decides which)."""

    @pytest.fixture
    def client_spec(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "chroma")}

    @pytest.fixture
    def client(self, client_spec: dict[str, Any]) -> ClientAPI:
        return connect(client_spec)

    @pytest.fixture(params=["minilm", "tiny-qzhou"])
    def model(self, request: pytest.FixtureRequest) -> str:
        return DEMO_MODEL if request.param == "minilm" else request.getfixturevalue("tiny_qzhou_path")

    # -- adding and querying ------------------------------------------------------------------------

    def test_add_and_query_agree_with_exact_search(self, client: ClientAPI, model: str) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=model)
        ids = fill(collection)
        encoder = collection.encoder
        assert collection.count() == len(TEXTS)
        # Stored vectors are the document side; queries use the query side (instructed for QZhou).
        np.testing.assert_allclose(
            stored_vectors(collection.collection, ids), encoder.encode_documents(TEXTS), atol=1e-5
        )
        similarities = encoder.encode_queries(QUERIES) @ encoder.encode_documents(TEXTS).T
        results = collection.query(QUERIES, n_results=3)
        assert [result.query for result in results] == QUERIES
        for result, row in zip(results, similarities, strict=True):
            best = np.argsort(-row)[:3]
            assert [hit.id for hit in result.hits] == [ids[i] for i in best]
            assert [hit.document for hit in result.hits] == [TEXTS[i] for i in best]
            assert [hit.metadata for hit in result.hits] == [{"topic": TOPICS[i]} for i in best]
            np.testing.assert_allclose([hit.score for hit in result.hits], row[best], atol=1e-4)
            np.testing.assert_allclose([hit.distance for hit in result.hits], 1 - row[best], atol=1e-4)
        # The first query of the demo model finds the cat; a random checkpoint finds whatever it finds.
        if model == DEMO_MODEL:
            assert results[0].hits[0].document == TEXTS[0]

    def test_the_persisted_function_is_ours_with_a_portable_config(
        self, client: ClientAPI, model: str
    ) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=model)
        persisted = collection.collection.configuration_json
        assert persisted["hnsw"]["space"] == "cosine"
        function = persisted["embedding_function"]
        assert function["name"] == "qzhou" and function["type"] == "known"
        config = function["config"]
        assert config == collection.embedding_function.get_config()
        assert config["model"] == model  # the name as given: DEMO_MODEL, not the packaged path
        assert config["dimension"] == collection.encoder.dimension
        assert (config["query_prefix"], config["document_prefix"]) == collection.encoder.prefixes(None)
        assert not {"device", "batch_tokens", "show_progress", "attn_implementation"} & set(config)
        # Plain Chroma, given no embedding function, rebuilds ours from the record.
        rebuilt = client.get_collection(collection.name).configuration["embedding_function"]
        assert isinstance(rebuilt, QZhouEmbeddingFunction)
        assert rebuilt.get_config() == config

    def test_readding_skips_what_is_there(self, client: ClientAPI, caplog: pytest.LogCaptureFixture) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)
        fill(collection)
        metadatas = [{"topic": topic} for topic in TOPICS]
        assert collection.add(TEXTS, metadatas) == AddResult(added=0, skipped=len(TEXTS))
        assert collection.add([*TEXTS, "A new sentence about tea."], [*metadatas, None]) == AddResult(
            1, len(TEXTS)
        )
        # A repeat within one call is the same record; the same text from another source is another one.
        assert collection.add(["Twice.", "Twice.", "Twice."], [None, None, {"source": "b"}]) == AddResult(
            2, 1
        )
        assert collection.count() == len(TEXTS) + 3
        # An id reused for another text is skipped, reported and logged: the stored text is kept.
        assert collection.add(["First text."], ids=["doc-1"]) == AddResult(1, 0)
        with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
            result = collection.add(["Second text.", "Third text."], ids=["doc-1", "doc-2"])
        assert result == AddResult(added=1, skipped=1, conflicts=("doc-1",))
        assert "doc-1" in caplog.text and "different document" in caplog.text
        assert collection.collection.get(ids=["doc-1"])["documents"] == ["First text."]

    @pytest.mark.parametrize(
        ("texts", "metadatas", "ids", "error", "fragments"),
        [
            (["a", "b", "c", None], None, None, TypeError, ["None at position(s) 3"]),
            (["a", "b", "c", 7], None, None, TypeError, ["int", "position(s) 3"]),
            (["a", "b", "c", "  "], None, None, ValueError, ["empty", "position(s) 3"]),
            ("one string", None, None, TypeError, ["single str"]),
            (["a", "b", "c"], [{"k": 1}, {"k": 2}], None, ValueError, ["3 texts", "2 metadatas"]),
            (["a", "b", "c"], None, ["1", "2"], ValueError, ["3 texts", "2 ids"]),
            (["a", "b", "c"], {"k": 1}, None, TypeError, ["metadatas", "single dict"]),
            (["a", "b", "c"], [None, {}, {"k": {"nested": 1}}], None, ValueError, ["metadatas[2]", "nested"]),
            (["a", "b", "c"], [None, None, {"k": np.float32(1)}], None, ValueError, ["metadatas[2]"]),
            (["a", "b", "c"], [None, None, ["k"]], None, TypeError, ["metadatas[2]", "list"]),
            (["a", "b", "c"], None, ["x", "y", "x"], ValueError, ["unique", "'x'", "0 and 2"]),
            (["a", "b", "c"], None, ["x", "y", 3], TypeError, ["ids[2]"]),
            (["a", "b", "c"], None, ["x", "y", ""], TypeError, ["ids[2]"]),
        ],
    )
    def test_bad_input_is_refused_before_anything_is_written(
        self, client: ClientAPI, texts: Any, metadatas: Any, ids: Any, error: type, fragments: list[str]
    ) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)
        # batch_size=2: the bad record is in the second batch, so a write of the first would show.
        with pytest.raises(error) as raised:
            collection.add(texts, metadatas, ids, batch_size=2)
        for fragment in fragments:
            assert fragment in str(raised.value)
        assert collection.count() == 0

    def test_a_stream_stops_at_its_first_bad_record_and_resumes(self, client: ClientAPI) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)
        broken = [*TEXTS[:5], None, *TEXTS[6:]]
        with pytest.raises(TypeError, match=r"texts\[5\] is None"):
            collection.add(iter(broken), batch_size=2)
        assert collection.count() == 4  # the two batches before the bad one, and nothing of its own
        assert collection.add(iter(TEXTS), batch_size=2) == AddResult(added=len(TEXTS) - 4, skipped=4)
        with pytest.raises(ValueError, match="metadatas ended after 3 items"):
            collection.add(iter(["x1", "x2", "x3", "x4"]), iter([{"k": 1}] * 3), batch_size=2)
        assert collection.count() == len(TEXTS) + 2

    def test_rerank_rescores_the_nearest_candidates(self, client: ClientAPI, tiny_qzhou_path: str) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=tiny_qzhou_path)
        fill(collection)
        query = QUERIES[1]
        candidates = collection.query(query, n_results=6)[0].hits
        reranked = collection.query(query, n_results=3, rerank_candidates=6, rerank_task="sts")[0].hits
        expected = score_candidates(
            collection.encoder, query, [hit.document for hit in candidates], task="sts"
        )
        best = np.argsort(-expected, kind="stable")[:3]
        assert [hit.id for hit in reranked] == [candidates[i].id for i in best]
        np.testing.assert_allclose([hit.score for hit in reranked], expected[best], atol=1e-5)
        assert [hit.distance for hit in reranked] == [candidates[i].distance for i in best]
        # The STS instruction on both sides gives other scores than the index's retrieval cosine.
        assert not np.allclose(
            [hit.score for hit in reranked], [1 - hit.distance for hit in reranked], atol=1e-3
        )
        # Fewer candidates than n_results still returns n_results hits (fetch max(candidates, n_results)).
        assert len(collection.query(query, n_results=4, rerank_candidates=2)[0].hits) == 4

    def test_query_arguments_are_checked(self, client: ClientAPI) -> None:
        collection = QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)
        fill(collection)
        assert collection.query([]) == []
        for bad, error in (({"n_results": 0}, ValueError), ({"rerank_candidates": 0}, ValueError),
                           ({"n_results": True}, ValueError)):  # fmt: skip
            with pytest.raises(error, match="positive integer"):
                collection.query("cats", **bad)
        with pytest.raises(TypeError, match="None at position"):
            collection.query(["cats", None])
        with pytest.raises(ValueError, match="empty"):
            collection.query(" ")
        hits = collection.query("money and banks", n_results=5, where={"topic": "finance"})[0].hits
        assert {hit.metadata["topic"] for hit in hits} == {"finance"} and len(hits) == 2
        assert len(collection.query("anything", n_results=50)[0].hits) == len(TEXTS)

    def test_result_counts_beyond_what_chroma_takes_are_refused(self, client: ClientAPI) -> None:
        """n_results is an unsigned 32-bit int in Chroma: 2**64 was an OverflowError from its core."""
        collection = QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)
        fill(collection)
        for value in (2**32, 2**64):
            with pytest.raises(ValueError, match=rf"n_results must be at most 4294967295.*not {value}"):
                collection.query("cats", n_results=value)
            with pytest.raises(ValueError, match="rerank_candidates must be at most"):
                collection.query("cats", rerank_candidates=value)
        for value in (1.5, -1, 0, False, "3", None):
            with pytest.raises(ValueError, match=r"n_results must be a positive integer, not"):
                collection.query("cats", n_results=value)
        assert len(collection.query("cats", n_results=2**32 - 1)[0].hits) == len(TEXTS)

    # -- refusing mismatches ------------------------------------------------------------------------

    def test_another_model_or_instruction_is_refused(self, client: ClientAPI, tiny_qzhou_path: str) -> None:
        minilm = QZhouCollection.open(unique_name("minilm"), client=client, model=DEMO_MODEL)
        qzhou = QZhouCollection.open(unique_name("qzhou"), client=client, model=tiny_qzhou_path)
        fill(minilm)
        fill(qzhou)
        before = {c.name: snapshot(c.collection) for c in (minilm, qzhou)}
        minilm_has, qzhou_has = (
            f"model: the collection has '{DEMO_MODEL}'",
            f"the collection has '{tiny_qzhou_path}'",
        )
        attempts = [
            (minilm.name, {"model": tiny_qzhou_path}, [minilm_has, tiny_qzhou_path]),
            (qzhou.name, {"model": DEMO_MODEL}, [qzhou_has]),
            (minilm.name, {"task": OTHER_INSTRUCTION}, ["query prefix: the collection has ''", "a legal"]),
            (qzhou.name, {"task": "sts"}, ["query prefix", "document prefix: the collection has ''"]),
            (qzhou.name, {"task": "FiQA2018"}, ["query prefix"]),
            (minilm.name, {"normalize": False}, ["normalize: the collection has True, you asked for False"]),
            (qzhou.name, {"pooling": "last"}, ["pooling: the collection has 'mean', you asked for 'last'"]),
        ]  # fmt: skip
        for name, options, fragments in attempts:
            with pytest.raises(CollectionMismatchError) as raised:
                QZhouCollection.open(name, client=client, **options)
            message = str(raised.value)
            for fragment in [*fragments, name, "left untouched", "another collection name", "reembed"]:
                assert fragment in message, (options, message)
        after = {name: snapshot(client.get_collection(name, embedding_function=None)) for name in before}
        for name in before:
            assert_same_snapshot(before[name], after[name])

    def test_what_the_collection_records_is_used_when_not_given(
        self, client: ClientAPI, tiny_qzhou_path: str
    ) -> None:
        created = QZhouCollection.open(unique_name(), client=client, model=tiny_qzhou_path, task="sts")
        fill(created)
        reopened = QZhouCollection.open(created.name, client=client)
        assert reopened.model == tiny_qzhou_path and reopened.task == "sts"
        assert reopened.embedding_function.prefixes == created.encoder.prefixes("sts")
        assert reopened.embedding_function.get_config() == created.embedding_function.get_config()
        # An equivalent task (same prefixes) is not a mismatch: for MiniLM every task type means no prefix.
        minilm = QZhouCollection.open(unique_name(), client=client, model=DEMO_MODEL)
        assert QZhouCollection.open(minilm.name, client=client, task="clustering").count() == 0

    def test_a_changed_dimension_is_refused(
        self, client: ClientAPI, qwen_tokenizer_dir: Path, tiny_qzhou_path: str, tmp_path: Path
    ) -> None:
        """The same model name now holds other weights (re-downloaded, rebuilt): the vectors would not fit."""
        checkpoint = str(shutil.copytree(tiny_qzhou_path, tmp_path / "checkpoint"))  # 64-d, a copy to rebuild
        collection = QZhouCollection.open(unique_name(), client=client, model=checkpoint)
        fill(collection)
        before = snapshot(collection.collection)
        build_qzhou_checkpoint(
            tmp_path / "checkpoint", qwen_tokenizer_dir, hidden_size=32, intermediate_size=64
        )
        qzhou_plugins.release_all()  # forget the 64-d weights held in memory
        # Opened as it records (model=None, or the same model), the model loads on first use (a sync
        # with nothing to embed never loads it), and is refused then, before anything is embedded.
        for model in (None, checkpoint):
            reopened = QZhouCollection.open(collection.name, client=client, model=model)
            with pytest.raises(
                CollectionMismatchError,
                match="32-dimensional vectors, but this collection holds 64-dimensional",
            ):
                reopened.query("cats")
        # Plain Chroma meets the same check in the rebuilt embedding function.
        with pytest.raises(
            ValueError, match="32-dimensional vectors, but this collection holds 64-dimensional"
        ):
            client.get_collection(collection.name).query(query_texts=["cats"])
        assert_same_snapshot(
            before, snapshot(client.get_collection(collection.name, embedding_function=None))
        )

    def test_a_collection_not_made_by_us_is_refused(self, client: ClientAPI) -> None:
        name = unique_name()
        foreign = client.create_collection(
            name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )
        foreign.add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]], documents=["some text"])
        before = snapshot(foreign)
        with pytest.raises(CollectionMismatchError, match="not made with QZhouEmbeddingFunction"):
            QZhouCollection.open(name, client=client, model=DEMO_MODEL)
        assert_same_snapshot(before, snapshot(client.get_collection(name, embedding_function=None)))

    def test_create_false_on_a_missing_collection(self, client: ClientAPI) -> None:
        name = unique_name()
        with pytest.raises(CollectionNotFoundError, match=name):
            QZhouCollection.open(name, client=client, model=DEMO_MODEL, create=False)
        assert name not in {collection.name for collection in client.list_collections()}

    def test_a_collection_made_with_the_bare_function_opens_in_the_helper(self, client: ClientAPI) -> None:
        name = unique_name()
        raw = client.create_collection(name, embedding_function=QZhouEmbeddingFunction(DEMO_MODEL))
        raw.add(ids=[f"t{i}" for i in range(len(TEXTS))], documents=TEXTS)
        by_text = raw.query(query_texts=QUERIES[:1], n_results=2)
        collection = QZhouCollection.open(name, client=client)
        hits = collection.query(QUERIES[0], n_results=2)[0].hits
        assert [hit.id for hit in hits] == by_text["ids"][0]
        np.testing.assert_allclose([hit.distance for hit in hits], by_text["distances"][0], atol=1e-5)

    # -- migrating ----------------------------------------------------------------------------------

    def test_reembed_in_place(self, client: ClientAPI, tiny_qzhou_path: str) -> None:
        name = unique_name()
        collection = QZhouCollection.open(name, client=client, model=DEMO_MODEL)
        ids = fill(collection)
        records = snapshot(collection.collection)["records"]
        migrated = collection.reembed(model=tiny_qzhou_path, batch_size=5)
        assert migrated is collection and migrated.name == name and migrated.model == tiny_qzhou_path
        assert snapshot(migrated.collection)["records"] == records
        np.testing.assert_allclose(
            stored_vectors(migrated.collection, ids), migrated.encoder.encode_documents(TEXTS), atol=1e-5
        )
        names = {c.name for c in client.list_collections()}
        assert name in names
        assert not [n for n in names if n.startswith(name + "-")], "staging or old copy left over"
        reopened = QZhouCollection.open(name, client=client)
        assert reopened.model == tiny_qzhou_path
        assert reopened.query(QUERIES[0], n_results=1)[0].hits[0].id in ids

    def test_reembed_into_a_new_collection_keeps_the_original(
        self, client: ClientAPI, tiny_qzhou_path: str
    ) -> None:
        original = QZhouCollection.open(unique_name(), client=client, model=tiny_qzhou_path)
        ids = fill(original)
        before = snapshot(original.collection)
        with pytest.raises(ValueError, match="leave it out to re-embed in place"):
            original.reembed(task="sts", new_name=original.name)
        copy = original.reembed(task="sts", new_name=unique_name("copy"))
        assert_same_snapshot(before, snapshot(client.get_collection(original.name, embedding_function=None)))
        assert copy.task == "sts" and copy.count() == len(TEXTS)
        np.testing.assert_allclose(
            stored_vectors(copy.collection, ids), copy.encoder.encode_documents(TEXTS, task="sts"), atol=1e-5
        )

    # -- across processes ---------------------------------------------------------------------------

    def test_round_trip_across_processes(
        self, client: ClientAPI, client_spec: dict[str, Any], tiny_qzhou_path: str
    ) -> None:
        """Filled here, read in a fresh process by plain chromadb after ``import qzhou_plugins.chroma``.

        The fresh process gives Chroma no embedding function: it must rebuild ours from the record.
        """
        collection = QZhouCollection.open(unique_name(), client=client, model=tiny_qzhou_path)
        assert collection.add(TEXTS).added == len(TEXTS)
        payload = {"spec": client_spec, "name": collection.name, "queries": QUERIES, "n_results": 3}
        found = run_child("query", payload)
        assert (
            found["function"] == "qzhou_plugins.integrations.chroma.embedding_function.QZhouEmbeddingFunction"
        )
        assert found["config"] == collection.embedding_function.get_config()
        encoder = Encoder.shared(model=tiny_qzhou_path)
        documents = encoder.encode_documents(TEXTS)
        query_side = encoder.encode_queries(QUERIES) @ documents.T
        document_side = encoder.encode_documents(QUERIES) @ documents.T
        ids = [content_id(text, None) for text in TEXTS]
        for row, found_ids, distances, wrong_side in zip(
            query_side, found["ids"], found["distances"], document_side, strict=True
        ):
            best = np.argsort(-row)[:3]
            assert found_ids == [ids[i] for i in best]
            np.testing.assert_allclose(distances, 1 - row[best], atol=1e-4)
            assert not np.allclose(distances, 1 - np.sort(wrong_side)[::-1][:3], atol=1e-3)

    def test_two_processes_adding_the_same_texts_at_once_count_them_once(
        self, client: ClientAPI, client_spec: dict[str, Any], tiny_qzhou_path: str, tmp_path: Path
    ) -> None:
        """This process and a child add the same texts, both having found them missing and embedded them.

        The store holds each once. The counts: on an embedded database the final check and the write
        are made under a lock, so exactly one writer counts each record as added and the other
        as present on write; through a server there is no such lock, and the result says so.
        """
        from chroma_child import meet_before_writing

        texts = [f"Race sentence {i}: two writers, one record, counted once." for i in range(40)]
        collection = QZhouCollection.open(unique_name("race"), client=client, model=tiny_qzhou_path)
        payload = {"spec": client_spec, "name": collection.name, "texts": texts, "folder": str(tmp_path)}
        child = subprocess.Popen(
            [sys.executable, str(CHILD), "race", json.dumps(payload)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            meet_before_writing(collection.embedding_function, str(tmp_path), "parent", "child")
            ours = collection.add(texts, show_progress=False)
            stdout, stderr = child.communicate(timeout=600)
        finally:
            child.kill()
        assert child.returncode == 0, stderr[-4000:]
        theirs = json.loads(stdout.splitlines()[-1].removeprefix("result "))
        stored = collection.collection.get()["ids"]
        assert sorted(stored) == sorted(content_id(text, None) for text in texts)
        for result in (dataclasses.asdict(ours), theirs):
            assert result["added"] + result["skipped"] == len(texts)
            # Both embedded every text: each was then either written or found written meanwhile.
            assert result["added"] + result["present_on_write"] == len(texts)
        local = client.get_settings().chroma_api_impl.endswith("RustBindingsAPI")
        assert ours.exact is theirs["exact"] is local
        if local:
            assert ours.added + theirs["added"] == len(texts)
            assert ours.present_on_write + theirs["present_on_write"] == len(texts)
        else:
            assert ours.added + theirs["added"] >= len(texts)

    def test_ingestion_killed_part_way_resumes_without_loss_or_duplicates(
        self,
        client_spec: dict[str, Any],
        tiny_qzhou_path: str,
        scifact_dir: Path,
        crash_records: list[tuple[str, dict[str, str]]],
        clean_ingestion: dict[str, np.ndarray],
    ) -> None:
        """2,000 SciFact abstracts, streamed by a child process that is SIGKILLed part-way, then rerun.

        The tiny QZhou checkpoint embeds them, not all-MiniLM-L6-v2, and only their first 128 tokens:
        a pass over 2,000 whole abstracts takes about 40 s with MiniLM on a free machine and minutes
        on a shared one, and what is tested here (stored batches are skipped, each batch is written
        whole, vectors do not depend on how the texts were batched) does not depend on the model or
        the length. The clean run embeds the same way, in one uninterrupted pass.
        """
        name = unique_name("ingest")
        payload = {"spec": client_spec, "name": name, "model": tiny_qzhou_path,
                   "corpus": str(scifact_dir / "corpus.jsonl"), "limit": CRASH_CORPUS_SIZE,
                   "max_length": CRASH_MAX_LENGTH, "batch_size": 100, "report_every": 100}  # fmt: skip
        child = subprocess.Popen(
            [sys.executable, str(CHILD), "ingest", json.dumps(payload)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None
        try:
            for line in child.stdout:
                # "progress 700": the stream is handing out text 700, so batches 1-6 (600 texts) are stored.
                if line.startswith("progress ") and int(line.split()[1]) >= 700:
                    os.kill(child.pid, signal.SIGKILL)
                    break
            else:
                pytest.fail(f"the ingestion ended before it could be killed:\n{child.stderr.read()[-4000:]}")
        finally:
            child.kill()
            child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL
        stored_before = run_child("count", {"spec": client_spec, "name": name})["count"]
        assert 600 <= stored_before < CRASH_CORPUS_SIZE
        # Resumed here, another process than the killed one, with the same stream of records.
        resumed = QZhouCollection.open(
            name, client=connect(client_spec), model=tiny_qzhou_path, max_length=CRASH_MAX_LENGTH
        ).add(
            (text for text, _ in crash_records),
            (metadata for _, metadata in crash_records),
            batch_size=payload["batch_size"],
            show_progress=False,
        )
        assert resumed == AddResult(added=CRASH_CORPUS_SIZE - stored_before, skipped=stored_before)

        found = (
            connect(client_spec)
            .get_collection(name, embedding_function=None)
            .get(include=["documents", "metadatas", "embeddings"])
        )
        expected = {content_id(text, metadata): (text, metadata) for text, metadata in crash_records}
        assert len(found["ids"]) == len(set(found["ids"])) == CRASH_CORPUS_SIZE
        assert set(found["ids"]) == set(expected) == set(clean_ingestion)
        for id_, document, metadata, vector in zip(
            found["ids"], found["documents"], found["metadatas"], found["embeddings"], strict=True
        ):
            assert (document, metadata) == expected[id_]
            np.testing.assert_allclose(vector, clean_ingestion[id_], atol=1e-5)


class TestEmbeddedCollection(CollectionSuite):
    """The suite on an embedded ``chromadb.PersistentClient`` in a temporary folder."""

    def test_open_makes_an_embedded_database_at_path(self, tmp_path: Path) -> None:
        collection = QZhouCollection.open("notes", path=tmp_path / "db", model=DEMO_MODEL)
        fill(collection)
        assert (tmp_path / "db" / "chroma.sqlite3").is_file()
        assert QZhouCollection.open("notes", path=tmp_path / "db").count() == len(TEXTS)
        with pytest.raises(TypeError, match="either path"):
            QZhouCollection.open("notes", path=tmp_path / "db", client=chromadb.EphemeralClient())


# -- the embedding function on its own ---------------------------------------------------------------


def test_importing_registers_the_function() -> None:
    assert known_embedding_functions["qzhou"] is QZhouEmbeddingFunction


def test_the_function_config_is_portable_and_round_trips() -> None:
    function = QZhouEmbeddingFunction(DEMO_MODEL, device="cpu", batch_tokens=4096, max_length=128)
    config = function.get_config()
    assert config == {
        "version": 1, "model": DEMO_MODEL, "task": None, "query_prefix": "", "document_prefix": "",
        "dimension": 384, "max_length": 128, "normalize": True, "dtype": "auto", "pooling": "mean",
        "bidirectional": None, "family": "bert", "dimensions": None,
    }  # fmt: skip
    assert json.loads(json.dumps(config)) == config
    rebuilt = QZhouEmbeddingFunction.build_from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.encoder.max_length == 128
    assert function.name() == "qzhou" and function.default_space() == "cosine"
    assert set(function.supported_spaces()) == {"cosine", "ip", "l2"}
    assert QZhouEmbeddingFunction(DEMO_MODEL, normalize=False).supported_spaces() == ["cosine"]
    assert not function.is_legacy()


def test_tasks_survive_the_config(tiny_qzhou_path: str) -> None:
    custom = Task(name="mine", instruction="Find the paragraph that defines the term", both_sides=True)
    for task in (None, "sts", "FiQA2018", OTHER_INSTRUCTION, custom):
        function = QZhouEmbeddingFunction(tiny_qzhou_path, task=task)
        rebuilt = QZhouEmbeddingFunction.build_from_config(json.loads(json.dumps(function.get_config())))
        assert rebuilt.task == task
        assert rebuilt.prefixes == function.encoder.prefixes(task)


def test_the_function_embeds_documents_and_queries_on_their_sides(tiny_qzhou_path: str) -> None:
    function = QZhouEmbeddingFunction(tiny_qzhou_path)
    encoder = Encoder.shared(model=tiny_qzhou_path)
    assert function.encoder is encoder
    documents, queries = function(TEXTS[:3]), function.embed_query(TEXTS[:3])
    assert all(isinstance(vector, np.ndarray) and vector.dtype == np.float32 for vector in documents)
    np.testing.assert_allclose(np.stack(documents), encoder.encode_documents(TEXTS[:3]), atol=1e-6)
    np.testing.assert_allclose(np.stack(queries), encoder.encode_queries(TEXTS[:3]), atol=1e-6)
    assert not np.allclose(np.stack(documents), np.stack(queries), atol=1e-3)


def test_the_function_refuses_bad_input_and_bad_settings() -> None:
    function = QZhouEmbeddingFunction(DEMO_MODEL)
    with pytest.raises(TypeError, match=r"documents must all be strings: None at position\(s\) 1"):
        function(["fine", None])
    with pytest.raises(ValueError, match=r"queries must not be empty.*position\(s\) 0"):
        function.embed_query([" "])
    with pytest.raises(UnknownTaskError, match="retrieval"):
        QZhouEmbeddingFunction(DEMO_MODEL, task="retreival")
    with pytest.raises(ValueError, match="device"):
        QZhouEmbeddingFunction(DEMO_MODEL, device="tpu-9")


def test_config_validation_names_each_problem() -> None:
    good = QZhouEmbeddingFunction(DEMO_MODEL).get_config()
    QZhouEmbeddingFunction.validate_config(good)
    broken = {**good, "dimension": "384", "normalize": 1, "colour": "red", "version": 9}
    del broken["query_prefix"]
    with pytest.raises(ValueError) as raised:
        QZhouEmbeddingFunction.validate_config(broken)
    for fragment in ("missing 'query_prefix'", "'dimension' is a str", "'normalize' is a int",
                     "unknown keys ['colour']", "version 9 is newer"):  # fmt: skip
        assert fragment in str(raised.value)
    function = QZhouEmbeddingFunction.build_from_config(good)
    function.validate_config_update(good, {**good, "max_length": 64, "dtype": "bfloat16"})
    for change in ({"model": "other/model"}, {"dimension": 768}, {"query_prefix": "Query: "}):
        with pytest.raises(ValueError, match=r"incomparable.*reembed"):
            function.validate_config_update(good, {**good, **change})


def test_chroma_refuses_swapping_the_function_of_a_collection(tmp_path: Path) -> None:
    """``collection.modify`` raises from validate_config_update, and the helper refuses the result."""
    collection = QZhouCollection.open("swap", path=tmp_path, model=DEMO_MODEL)
    other = QZhouEmbeddingFunction(DEMO_MODEL, task=OTHER_INSTRUCTION)
    with pytest.raises(ValueError, match="query prefix"):
        collection.collection.modify(configuration={"embedding_function": other})
    # Chroma has already written the new record by then; the helper notices on the next open.
    with pytest.raises(CollectionMismatchError, match="changed after its vectors were written") as raised:
        QZhouCollection.open("swap", path=tmp_path)
    assert "query prefix: the vectors were made with '', the record now says 'Given a legal" in str(
        raised.value
    )


def test_a_reopened_collection_shares_the_loaded_model(tmp_path: Path) -> None:
    collection = QZhouCollection.open("shared", path=tmp_path, model=DEMO_MODEL)
    fill(collection)
    assert collection.encoder is Encoder.shared(model=DEMO_MODEL)
    loaded = len(qzhou_plugins.loaded_models())
    chromadb.PersistentClient(path=str(tmp_path)).get_collection("shared").query(query_texts=["cats"])
    QZhouCollection.open("shared", path=tmp_path).query("cats")
    assert len(qzhou_plugins.loaded_models()) == loaded


def test_missing_chromadb_is_named_and_the_core_still_imports() -> None:
    script = (
        "import sys\n"
        "import qzhou_plugins\n"
        "assert 'chromadb' not in sys.modules, 'the core imported chromadb'\n"
        "sys.modules['chromadb'] = None\n"
        "try:\n"
        "    import qzhou_plugins.chroma\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pip install 'qzhou-plugins[chroma]'" in done.stdout


# -- approximate search quality ----------------------------------------------------------------------


def recall_at_10(collection: QZhouCollection, queries: list[str]) -> float:
    """Chroma's top 10 against exact search over the very vectors it stores."""
    found = collection.collection.get(include=["embeddings"])
    ids, vectors = found["ids"], np.asarray(found["embeddings"], dtype=np.float32)
    exact = np.argsort(-(collection.embedding_function.embed_queries(queries) @ vectors.T), axis=1)[:, :10]
    results = collection.query(queries, n_results=10)
    overlaps = [len({ids[i] for i in row} & {hit.id for hit in result.hits}) / 10
                for row, result in zip(exact, results, strict=True)]  # fmt: skip
    return float(np.mean(overlaps))


@pytest.fixture(scope="module")
def scifact_collection(
    tmp_path_factory: pytest.TempPathFactory, scifact_corpus: list[dict[str, str]], scifact_vector_cache: Path
) -> QZhouCollection:
    """The first 1,000 SciFact abstracts with MiniLM (about 20 s on a free machine), built once; their
    vectors come from the session's SciFact cache when the whole-corpus tests have run first."""
    collection = QZhouCollection.open(
        "scifact-1000",
        path=tmp_path_factory.mktemp("scifact"),
        model=DEMO_MODEL,
        cache_dir=str(scifact_vector_cache),
    )
    corpus = scifact_corpus[:1000]
    collection.add([document_text(d) for d in corpus], ids=[d["_id"] for d in corpus], show_progress=False)
    return collection


def test_approximate_search_matches_exact_search(
    scifact_collection: QZhouCollection, scifact_queries: list[dict[str, str]]
) -> None:
    recall = recall_at_10(scifact_collection, [query["text"] for query in scifact_queries])
    print(f"recall@10 of Chroma against exact search, 1,000 abstracts x 300 queries: {recall:.4f}")
    assert recall >= 0.99, recall


# -- other frameworks read the collection ------------------------------------------------------------


@pytest.mark.parametrize("model_kind", ["minilm", "tiny-qzhou"])
def test_langchain_reads_a_helper_collection(
    tmp_path: Path, model_kind: str, request: pytest.FixtureRequest
) -> None:
    adapter = pytest.importorskip("qzhou_plugins.langchain", reason="the LangChain adapter is not there yet")
    from langchain_chroma import Chroma

    model = DEMO_MODEL if model_kind == "minilm" else request.getfixturevalue("tiny_qzhou_path")
    client = chromadb.PersistentClient(path=str(tmp_path))
    collection = QZhouCollection.open("shared-with-langchain", client=client, model=model)
    fill(collection)
    store = Chroma(
        client=client,
        collection_name=collection.name,
        embedding_function=adapter.QZhouEmbeddings(model=model),
    )
    for query in QUERIES:
        ours = collection.query(query, n_results=4)[0].hits
        theirs = store.similarity_search_with_score(query, k=4)
        assert [document.id for document, _ in theirs] == [hit.id for hit in ours]
        assert [document.page_content for document, _ in theirs] == [hit.document for hit in ours]
        assert [document.metadata for document, _ in theirs] == [hit.metadata for hit in ours]
        np.testing.assert_allclose(
            [distance for _, distance in theirs], [hit.distance for hit in ours], atol=1e-5
        )


@pytest.mark.parametrize("model_kind", ["minilm", "tiny-qzhou"])
def test_llama_index_reads_a_helper_collection(
    tmp_path: Path, model_kind: str, request: pytest.FixtureRequest
) -> None:
    adapter = pytest.importorskip(
        "qzhou_plugins.llama_index", reason="the LlamaIndex adapter is not there yet"
    )
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    model = DEMO_MODEL if model_kind == "minilm" else request.getfixturevalue("tiny_qzhou_path")
    collection = QZhouCollection.open("shared-with-llama-index", path=tmp_path, model=model)
    fill(collection)
    index = VectorStoreIndex.from_vector_store(
        ChromaVectorStore(chroma_collection=collection.collection),
        embed_model=adapter.QZhouEmbedding(model=model),
    )
    retriever = index.as_retriever(similarity_top_k=4)
    for query in QUERIES:
        ours = collection.query(query, n_results=4)[0].hits
        theirs = retriever.retrieve(query)
        assert [found.node.node_id for found in theirs] == [hit.id for hit in ours]
        assert [found.node.get_content() for found in theirs] == [hit.document for hit in ours]


# -- the example notebook ----------------------------------------------------------------------------


def test_example_notebook_runs(tmp_path: Path) -> None:
    """Executed with the ``python3`` kernel of this very interpreter, from a scratch folder."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "examples" / "chroma_collection.ipynb", as_version=4)
    # No kernel folders: jupyter_client then uses ipykernel's own spec, which runs sys.executable.
    kernels = KernelSpecManager(kernel_dirs=[])
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=kernels)
    assert manager.kernel_spec is not None and manager.kernel_spec.argv[0] == sys.executable
    client = NotebookClient(
        notebook, km=manager, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "CollectionMismatchError" in outputs
    assert "cross-encoder probability" in outputs  # the cross-encoder section ran
    assert not any(output.get("output_type") == "error" for cell in notebook.cells
                   if cell.cell_type == "code" for output in cell.outputs)  # fmt: skip
