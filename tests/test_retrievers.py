"""The framework retrievers over a QZhouCollection: LangChain's standard retriever suite, the
LlamaIndex retriever inside a RetrieverQueryEngine, and the hybrid search notebook.

One collection for the module: the notes of tests/test_hybrid.py, embedded with all-MiniLM-L6-v2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore

from qzhou_plugins.chroma import QZhouCollection
from qzhou_plugins.langchain import QZhouRetriever
from qzhou_plugins.llama_index import QZhouRetriever as LlamaIndexRetriever
from test_hybrid import filled
from test_langchain import execute_notebook, printed

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "hybrid_search.ipynb"


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> QZhouCollection:
    return filled(tmp_path_factory.mktemp("retrievers"))


class TestLangChainStandard(RetrieversIntegrationTests):
    """langchain-tests' own suite: ``k`` in the constructor and per call, Documents, sync and async."""

    collection: QZhouCollection

    @pytest.fixture(autouse=True)
    def _bind_collection(self, notes: QZhouCollection) -> None:
        self.collection = notes

    @property
    def retriever_constructor(self) -> type[QZhouRetriever]:
        return QZhouRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"collection": self.collection, "mode": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return "which replacement part fits the garden pump?"


def test_langchain_documents_carry_what_each_side_said(notes: QZhouCollection) -> None:
    retriever = QZhouRetriever(collection=notes, k=3)
    documents = retriever.invoke("error code E4711")
    assert all(isinstance(document, Document) for document in documents)
    first = documents[0]
    assert first.id == "parts-2" and "E4711" in first.page_content and first.metadata["topic"] == "parts"
    assert first.metadata["sources"] == ["dense", "lexical"]
    assert first.metadata["relevance_score"] == first.metadata["fused_score"]
    assert {"dense_score", "lexical_score"} <= set(first.metadata)
    lexical = retriever.invoke("error code E4711", mode="lexical", k=5)
    assert [document.id for document in lexical] == ["parts-2"]
    assert lexical[0].metadata["relevance_score"] == lexical[0].metadata["lexical_score"]
    filtered = retriever.invoke("error code E4711", where={"topic": "pets"})
    assert filtered and all(document.metadata["topic"] == "pets" for document in filtered)
    reranked = retriever.invoke("error code E4711", rerank_candidates=5, k=2)
    assert (
        len(reranked) == 2 and reranked[0].metadata["relevance_score"] != reranked[0].metadata["fused_score"]
    )


def test_both_retrievers_pass_the_rerank_task_and_instruction(notes: QZhouCollection) -> None:
    query, instruction = "error code E4711", "Given an error code, find the repair note that explains it"
    options: dict[str, Any] = {"mode": "hybrid", "rerank_candidates": 5, "rerank_instruction": instruction}
    expected = [hit.score for hit in notes.query(query, n_results=2, **options)[0].hits]
    plain = [hit.score for hit in notes.query(query, n_results=2, mode="hybrid", rerank_candidates=5)[0].hits]
    assert expected != pytest.approx(plain, abs=1e-4)  # the instruction changes the rerank
    langchain = QZhouRetriever(collection=notes, k=2, **options).invoke(query)
    assert [document.metadata["relevance_score"] for document in langchain] == pytest.approx(
        expected, abs=1e-6
    )
    llama_index = LlamaIndexRetriever(notes, similarity_top_k=2, **options).retrieve(query)
    assert [node.score for node in llama_index] == pytest.approx(expected, abs=1e-6)
    task = {**options, "rerank_instruction": None, "rerank_task": "Find the note that explains a code"}
    by_task = [hit.score for hit in notes.query(query, n_results=2, **task)[0].hits]
    assert by_task != pytest.approx(plain, abs=1e-4)  # a task of its own words: its instruction
    per_call = QZhouRetriever(collection=notes, k=2).invoke(query, **task)
    assert [document.metadata["relevance_score"] for document in per_call] == pytest.approx(by_task, abs=1e-6)


async def test_langchain_async_matches_sync(notes: QZhouCollection) -> None:
    retriever = QZhouRetriever(collection=notes, k=3, where_document={"$contains": "capital"})
    documents = await retriever.ainvoke("the capital of Germany")
    assert [d.id for d in documents] == [d.id for d in retriever.invoke("the capital of Germany")]
    assert {d.id for d in documents} == {"cities-1", "cities-2"}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [({"mode": "bm25"}, ValueError, "unknown mode 'bm25'"),
     ({"k": 0}, ValueError, "k must be a positive integer"),
     ({"fusion": "weighted", "alpha": 2}, ValueError, "alpha must be from 0 to 1"),
     ({"where": "topic=pets"}, TypeError, "where must be a mapping"),
     ({"rerank_candidates": -1}, ValueError, "rerank_candidates must be a positive integer"),
     ({"rerank_task": "nonsense"}, ValueError, "Unknown task")],
)  # fmt: skip
def test_bad_retriever_options_are_named(
    notes: QZhouCollection, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        QZhouRetriever(collection=notes, **options)
    with pytest.raises(error, match=message):
        LlamaIndexRetriever(notes, **options) if "k" not in options else LlamaIndexRetriever(
            notes, similarity_top_k=options["k"]
        )
    with pytest.raises(TypeError, match="unknown option"):
        QZhouRetriever(collection=notes).invoke("pump", top_k=3)
    with pytest.raises(TypeError, match=r"must be a qzhou_plugins\.chroma\.QZhouCollection"):
        LlamaIndexRetriever(notes.collection)


def test_llama_index_retriever_in_a_query_engine(notes: QZhouCollection, tmp_path: Path) -> None:
    retriever = LlamaIndexRetriever(notes, similarity_top_k=3, mode="hybrid")
    found = retriever.retrieve("error code E4711")
    assert all(isinstance(node, NodeWithScore) for node in found) and len(found) == 3
    assert found[0].node.node_id == "parts-2" and found[0].score == found[0].node.metadata["fused_score"]
    llm_text = found[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "E4711" in llm_text and "topic: parts" in llm_text and "dense_score" not in llm_text
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))
    response = engine.query("What does error code E4711 mean?")
    assert str(response)  # the mock LLM answered from the retrieved context
    assert [node.node.node_id for node in response.source_nodes] == [node.node.node_id for node in found]
    lexical = LlamaIndexRetriever(notes, similarity_top_k=5, mode="lexical", where={"topic": "parts"})
    assert {node.node.node_id for node in lexical.retrieve("pump")} == {"parts-1", "parts-2"}
    assert "mode='lexical'" in repr(lexical)


async def test_llama_index_retriever_async(notes: QZhouCollection) -> None:
    retriever = LlamaIndexRetriever(notes, similarity_top_k=2)
    found = await retriever.aretrieve("capital of France")
    assert [node.node.node_id for node in found] == [
        node.node.node_id for node in retriever.retrieve("capital of France")
    ]


@pytest.mark.parametrize("data", ["scifact", "sample"])
def test_hybrid_notebook_runs(
    data: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: Any
) -> None:
    """examples/hybrid_search.ipynb on SciFact (when ../shared/data has it) and on the example notes."""
    shared = request.getfixturevalue("scifact_dir").parent if data == "scifact" else tmp_path
    monkeypatch.setenv("QZHOU_SHARED_DATA", str(shared))
    output = printed(execute_notebook(NOTEBOOK))
    assert output.startswith(f"{data}: ")
    answered = {mode: int(re.search(rf"{mode}: answered in the top 3 for (\d+)", output).group(1))
                for mode in ("dense", "hybrid")}  # fmt: skip
    assert answered["hybrid"] > answered["dense"]
    assert "only hybrid: " in output and "<- the answer" in output.split("--- hybrid ---")[1]
    if data == "scifact":
        assert "The question: CCL19 is absent within dLNs." in output  # a protein's code
