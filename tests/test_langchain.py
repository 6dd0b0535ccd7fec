"""The LangChain adapter: sides and instructions, sharing, bad input, vector store, reranker, async.

Instruction placement is checked on the tiny QZhou-shaped checkpoint (the model family that has
instructions, with a tokenizer that keeps newlines apart from spaces); retrieval quality and reranking
order on all-MiniLM-L6-v2 (real weights, so orders mean something); the vector store over SciFact.
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from conftest import document_text
from qzhou_plugins import DEMO_MODEL, Encoder, Task, loaded_models
from qzhou_plugins.langchain import QZhouEmbeddings, QZhouReranker
from qzhou_plugins.rerank import LOWEST_SCORE, score_candidates

QUERIES = ["What do cats eat?", "How is QZhou-Embedding trained?\nExplain briefly."]
DOCUMENTS = [
    "Cats are obligate carnivores and eat mostly meat.",
    "QZhou-Embedding is trained with contrastive learning\non retrieval and similarity data.",
    "The Yangtze is the longest river in Asia.",
]
NEWLINE_INSTRUCTION = "Given a scientific claim,\nretrieve the abstracts that support or refute it"


def loaded_keys() -> set[tuple[str, ...]]:
    return {model.key for model in loaded_models()}


@pytest.fixture(scope="module")
def tiny_encoder(tiny_qzhou_path: str) -> Encoder:
    """An encoder of its own (not the shared one), so the comparisons are against the core directly."""
    return Encoder(model=tiny_qzhou_path)


@pytest.fixture(scope="module")
def minilm_embeddings() -> QZhouEmbeddings:
    return QZhouEmbeddings(model=DEMO_MODEL)


# -- sides and instructions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    ["retrieval", "sts", "STSBenchmark", "FiQA2018", "clustering", NEWLINE_INSTRUCTION],
)
def test_sides_equal_the_core(tiny_qzhou_path: str, tiny_encoder: Encoder, task: str) -> None:
    embeddings = QZhouEmbeddings(model=tiny_qzhou_path, task=task)
    query_vector = np.array(embeddings.embed_query(QUERIES[1]), dtype=np.float32)
    document_vectors = np.array(embeddings.embed_documents(DOCUMENTS), dtype=np.float32)

    np.testing.assert_allclose(
        query_vector, tiny_encoder.encode_queries([QUERIES[1]], task=task)[0], atol=1e-6
    )
    np.testing.assert_allclose(
        document_vectors, tiny_encoder.encode_documents(DOCUMENTS, task=task), atol=1e-6
    )
    assert embeddings.prefixes == tiny_encoder.prefixes(task)


def test_retrieval_instructs_queries_only(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    embeddings = QZhouEmbeddings(model=tiny_qzhou_path)
    query_prefix, document_prefix = embeddings.prefixes
    assert query_prefix.startswith("Instruct: Given a web search query") and query_prefix.endswith(
        "\nQuery: "
    )
    assert document_prefix == ""
    # The same text embedded as a query and as a document must differ: the sides are not mixed up.
    as_query = np.array(embeddings.embed_query(DOCUMENTS[0]))
    as_document = np.array(embeddings.embed_documents([DOCUMENTS[0]])[0])
    assert not np.allclose(as_query, as_document, atol=1e-3)
    np.testing.assert_allclose(as_document, tiny_encoder.encode([DOCUMENTS[0]])[0], atol=1e-6)


def test_symmetric_task_instructs_both_sides(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    embeddings = QZhouEmbeddings(model=tiny_qzhou_path, task="sts")
    query_prefix, document_prefix = embeddings.prefixes
    assert query_prefix == document_prefix == "Instruct: Retrieve semantically similar text\nQuery: "
    vectors = np.array(embeddings.embed_documents(DOCUMENTS))
    np.testing.assert_allclose(
        vectors, tiny_encoder.encode(DOCUMENTS, instruction="Retrieve semantically similar text"), atol=1e-6
    )
    assert not np.allclose(vectors, tiny_encoder.encode(DOCUMENTS), atol=1e-3)
    # Symmetric: a text is the same vector on either side.
    np.testing.assert_allclose(embeddings.embed_query(DOCUMENTS[2]), vectors[2], atol=1e-6)


def test_newlines_in_instruction_and_text_survive(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    embeddings = QZhouEmbeddings(model=tiny_qzhou_path, task=NEWLINE_INSTRUCTION)
    assert embeddings.prefixes[0] == f"Instruct: {NEWLINE_INSTRUCTION}\nQuery: "
    query_vector = np.array(embeddings.embed_query(QUERIES[1]))
    np.testing.assert_allclose(
        query_vector, tiny_encoder.encode([QUERIES[1]], instruction=NEWLINE_INSTRUCTION)[0], atol=1e-6
    )
    # What a wrapper that replaces newlines by spaces would compute: a different vector on this model.
    flattened = tiny_encoder.encode(
        [QUERIES[1].replace("\n", " ")], instruction=NEWLINE_INSTRUCTION.replace("\n", " ")
    )[0]
    assert not np.allclose(query_vector, flattened, atol=1e-4)
    document_vector = np.array(embeddings.embed_documents([DOCUMENTS[1]])[0])
    assert not np.allclose(
        document_vector, tiny_encoder.encode([DOCUMENTS[1].replace("\n", " ")])[0], atol=1e-4
    )


def test_explicit_instructions_override_one_side(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    embeddings = QZhouEmbeddings(
        model=tiny_qzhou_path, task="sts", query_instruction="Find the paraphrase", document_instruction=""
    )
    assert embeddings.prefixes == ("Instruct: Find the paraphrase\nQuery: ", "")
    np.testing.assert_allclose(
        embeddings.embed_query(QUERIES[0]),
        tiny_encoder.encode([QUERIES[0]], instruction="Find the paraphrase")[0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        embeddings.embed_documents(DOCUMENTS), tiny_encoder.encode(DOCUMENTS), atol=1e-6
    )
    # Only the query side is overridden here: documents keep the task's instruction.
    documents_only = QZhouEmbeddings(model=tiny_qzhou_path, task="sts", query_instruction="")
    assert documents_only.prefixes == ("", "Instruct: Retrieve semantically similar text\nQuery: ")


def test_task_object_is_accepted(tiny_qzhou_path: str) -> None:
    task = Task(name="claims", instruction="Verify the claim", both_sides=True)
    embeddings = QZhouEmbeddings(model=tiny_qzhou_path, task=task)
    assert embeddings.prefixes == ("Instruct: Verify the claim\nQuery: ",) * 2


def test_non_instructed_model_ignores_task_types(minilm_embeddings: QZhouEmbeddings) -> None:
    """MiniLM was not trained with QZhou's instructions: the default retrieval task adds no prefix."""
    assert minilm_embeddings.prefixes == ("", "")
    vector = minilm_embeddings.embed_query(DOCUMENTS[0])
    np.testing.assert_allclose(vector, minilm_embeddings.embed_documents([DOCUMENTS[0]])[0], atol=1e-6)


def test_returns_plain_python_floats(minilm_embeddings: QZhouEmbeddings) -> None:
    vectors = minilm_embeddings.embed_documents(DOCUMENTS)
    assert type(vectors) is list and all(type(vector) is list for vector in vectors)
    assert {type(value) for vector in vectors for value in vector} == {float}
    assert {len(vector) for vector in vectors} == {minilm_embeddings.dimension} == {384}
    assert minilm_embeddings.embed_documents([]) == []
    # Normalised, so LangChain's cosine / dot-product / Euclidean orders agree.
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# -- one model per process --------------------------------------------------------------------------


def test_instances_share_one_model(tiny_qzhou_path: str) -> None:
    first = QZhouEmbeddings(model=tiny_qzhou_path)
    before = loaded_keys()
    second = QZhouEmbeddings(model=tiny_qzhou_path)
    assert second.encoder is first.encoder
    other_options = QZhouEmbeddings(model=tiny_qzhou_path, batch_tokens=1024, task="sts")
    reranker = QZhouReranker(model=tiny_qzhou_path)
    reranker.compress_documents([Document(page_content=text) for text in DOCUMENTS], QUERIES[0])
    other_options.embed_documents(DOCUMENTS)
    assert loaded_keys() == before


def test_existing_encoder_is_used_as_is(tiny_encoder: Encoder, tiny_qzhou_path: str) -> None:
    embeddings = QZhouEmbeddings(encoder=tiny_encoder, task="sts")
    assert embeddings.encoder is tiny_encoder
    assert embeddings.model == tiny_qzhou_path
    assert "encoder" not in embeddings.model_dump()
    with pytest.raises(ValidationError, match=r"either encoder= or the options.*device, model"):
        QZhouEmbeddings(encoder=tiny_encoder, model=tiny_qzhou_path, device="cpu")


# -- bad input ----------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_error(minilm_embeddings: QZhouEmbeddings) -> None:
    with pytest.raises(TypeError, match="query must be a string, not NoneType"):
        minilm_embeddings.embed_query(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query must not be empty"):
        minilm_embeddings.embed_query("  \n")
    with pytest.raises(TypeError, match=r"documents must all be strings: None at position\(s\) 2"):
        minilm_embeddings.embed_documents(["fine", "also fine", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"documents must not be empty.*position\(s\) 1"):
        minilm_embeddings.embed_documents(["fine", ""])
    with pytest.raises(TypeError, match="not a single str"):
        minilm_embeddings.embed_documents("one string")  # type: ignore[arg-type]


def test_unknown_task_fails_before_any_loading() -> None:
    before = loaded_keys()
    with pytest.raises(ValidationError, match=r"Unknown task 'retreival'\. Close matches: retrieval"):
        QZhouEmbeddings(model="/nowhere/at/all", task="retreival")
    with pytest.raises(ValidationError, match="Unknown task 'STSbenchmak'"):
        QZhouReranker(model="/nowhere/at/all", task="STSbenchmak")
    assert loaded_keys() == before


def test_missing_model_says_so() -> None:
    from qzhou_plugins import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist"):
        QZhouEmbeddings(model="/nowhere/at/all")


def test_missing_langchain_is_named_and_core_still_imports() -> None:
    """Without langchain-core, the core imports and the adapter says what to install."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "import qzhou_plugins\n"
        "try:\n"
        "    import qzhou_plugins.langchain\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'qzhou-plugins[langchain]'" in done.stdout


# -- the vector store agrees with exact search --------------------------------------------------------


@pytest.fixture(scope="module")
def scifact_sample(
    scifact_corpus: list[dict[str, str]], scifact_queries: list[dict[str, str]]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return scifact_corpus[:1000], scifact_queries[:50]


def test_in_memory_store_matches_exact_search(
    tiny_qzhou_path: str, tiny_encoder: Encoder, scifact_sample: Any
) -> None:
    """On the QZhou path, so the store's queries carry the instruction and its documents do not."""
    corpus, queries = scifact_sample
    texts = [document_text(document) for document in corpus]
    ids = [document["_id"] for document in corpus]
    store = InMemoryVectorStore(embedding=QZhouEmbeddings(model=tiny_qzhou_path))
    store.add_documents([Document(page_content=text, id=i) for text, i in zip(texts, ids, strict=True)])

    scores = (
        tiny_encoder.encode_queries([q["text"] for q in queries]) @ tiny_encoder.encode_documents(texts).T
    )
    mismatches = []
    for row, query in enumerate(queries):
        found = store.similarity_search_with_score(query["text"], k=10)
        found_ids = [document.id for document, _ in found]
        exact = np.argsort(-scores[row], kind="stable")[:10]
        exact_ids = [ids[i] for i in exact]
        np.testing.assert_allclose([score for _, score in found], scores[row][exact], atol=1e-5)
        if found_ids != exact_ids:
            # Allowed only where two scores tie to float precision (their order is then arbitrary).
            by_id = dict(zip(ids, scores[row], strict=True))
            pairs = zip(found_ids, exact_ids, strict=True)
            if any(abs(by_id[a] - by_id[b]) > 1e-6 for a, b in pairs if a != b):
                mismatches.append((query["_id"], found_ids, exact_ids))
    assert not mismatches, mismatches


def test_langchain_chroma_store(minilm_embeddings: QZhouEmbeddings, tmp_path: Path) -> None:
    """The same embeddings in langchain-chroma's Chroma, persisted on disk and searched by cosine."""
    chromadb = pytest.importorskip("chromadb")
    from langchain_chroma import Chroma

    settings = chromadb.Settings(anonymized_telemetry=False)
    store = Chroma(
        collection_name="pets",
        embedding_function=minilm_embeddings,
        persist_directory=str(tmp_path),
        client_settings=settings,
        collection_configuration={"hnsw": {"space": "cosine"}},
    )
    store.add_documents(copy.deepcopy(PETS))
    found = store.similarity_search_with_score(PETS_QUERY, k=2)
    query_vector = np.array(minilm_embeddings.embed_query(PETS_QUERY))
    document_vectors = np.array(minilm_embeddings.embed_documents([d.page_content for d in PETS]))
    cosines = document_vectors @ query_vector
    best = np.argsort(-cosines)[:2]
    assert [document.id for document, _ in found] == [PETS[i].id for i in best]
    # Chroma reports cosine distances: 1 - cosine.
    np.testing.assert_allclose([distance for _, distance in found], 1 - cosines[best], atol=1e-4)


# -- the reranker -----------------------------------------------------------------------------------


PETS = [
    Document(page_content="The stock market fell sharply on Monday.", id="finance", metadata={"source": "a"}),
    Document(page_content="Dogs and cats are the most common pets.", id="pets", metadata={"tags": ["x"]}),
    Document(page_content="Cats sleep between twelve and sixteen hours a day.", id="cats"),
    Document(page_content="Volcanic eruptions can change the climate.", id="volcano"),
    Document(page_content="Parrots can live for more than fifty years.", id="parrots"),
]
PETS_QUERY = "How many hours a day do cats sleep?"


@pytest.fixture(scope="module")
def minilm_reranker() -> QZhouReranker:
    return QZhouReranker(model=DEMO_MODEL, top_n=None)


def test_reranker_orders_by_score(minilm_reranker: QZhouReranker) -> None:
    ranked = minilm_reranker.compress_documents(PETS, PETS_QUERY)
    expected = score_candidates(minilm_reranker.encoder, PETS_QUERY, [d.page_content for d in PETS])
    assert [document.id for document in ranked] == [PETS[i].id for i in np.argsort(-expected, kind="stable")]
    got = [document.metadata["relevance_score"] for document in ranked]
    assert all(type(score) is float for score in got)
    np.testing.assert_allclose(got, sorted(expected, reverse=True), atol=1e-6)
    assert ranked[0].id == "cats" and ranked[-1].id in {"finance", "volcano"}
    assert ranked[0].page_content == PETS[2].page_content


def test_reranker_scores_follow_the_task_rule(tiny_qzhou_path: str, tiny_encoder: Encoder) -> None:
    """Reranking instructs the query only; a symmetric task instructs both sides."""
    documents = [Document(page_content=text) for text in DOCUMENTS]
    for task in ("reranking", "sts"):
        ranked = QZhouReranker(model=tiny_qzhou_path, top_n=None, task=task).compress_documents(
            documents, QUERIES[0]
        )
        cosines = (
            tiny_encoder.encode_documents(DOCUMENTS, task=task)
            @ tiny_encoder.encode_queries([QUERIES[0]], task=task)[0]
        )
        by_text = {d.page_content: d.metadata["relevance_score"] for d in ranked}
        np.testing.assert_allclose([by_text[text] for text in DOCUMENTS], cosines, atol=1e-5)


def test_reranker_top_n_and_threshold(minilm_reranker: QZhouReranker) -> None:
    default = QZhouReranker(encoder=minilm_reranker.encoder)
    assert default.top_n == 3
    assert [d.id for d in default.compress_documents(PETS, PETS_QUERY)] == [
        d.id for d in minilm_reranker.compress_documents(PETS, PETS_QUERY)[:3]
    ]
    one = QZhouReranker(encoder=minilm_reranker.encoder, top_n=1).compress_documents(PETS, PETS_QUERY)
    assert [d.id for d in one] == ["cats"]

    everything = minilm_reranker.compress_documents(PETS, PETS_QUERY)
    threshold = (everything[1].metadata["relevance_score"] + everything[2].metadata["relevance_score"]) / 2
    kept = QZhouReranker(encoder=minilm_reranker.encoder, top_n=None, score_threshold=threshold)
    assert [d.id for d in kept.compress_documents(PETS, PETS_QUERY)] == [d.id for d in everything[:2]]
    with pytest.raises(ValidationError, match="top_n"):
        QZhouReranker(encoder=minilm_reranker.encoder, top_n=0)


def test_reranker_leaves_inputs_untouched(minilm_reranker: QZhouReranker) -> None:
    documents = copy.deepcopy(PETS)
    snapshot = copy.deepcopy(documents)
    ranked = minilm_reranker.compress_documents(documents, PETS_QUERY)
    assert documents == snapshot
    assert all("relevance_score" not in document.metadata for document in documents)
    pets = next(document for document in ranked if document.id == "pets")
    pets.metadata["tags"].append("changed downstream")
    assert documents[1].metadata["tags"] == ["x"]
    assert pets.metadata["tags"] is not documents[1].metadata["tags"]


def test_reranker_scores_empty_pages_lowest(minilm_reranker: QZhouReranker) -> None:
    documents = [*PETS[:2], Document(page_content=""), Document(page_content="  \n "), PETS[2]]
    ranked = minilm_reranker.compress_documents(documents, PETS_QUERY)
    assert len(ranked) == 5
    assert [d.metadata["relevance_score"] for d in ranked[-2:]] == [LOWEST_SCORE, LOWEST_SCORE]
    assert ranked[0].id == "cats"
    blank = minilm_reranker.compress_documents([Document(page_content="")], PETS_QUERY)
    assert blank[0].metadata["relevance_score"] == LOWEST_SCORE
    assert minilm_reranker.compress_documents([], PETS_QUERY) == []
    with pytest.raises(ValueError, match="query must not be empty"):
        minilm_reranker.compress_documents(PETS, "")
    with pytest.raises(TypeError, match=r"Document objects: not at position\(s\) 1$"):
        minilm_reranker.compress_documents([PETS[0], "plain text"], PETS_QUERY)  # type: ignore[list-item]


def test_reranker_loads_no_second_model(minilm_embeddings: QZhouEmbeddings) -> None:
    minilm_embeddings.embed_query(PETS_QUERY)
    before = len(loaded_models())
    reranker = QZhouReranker(model=DEMO_MODEL, top_n=2)
    assert len(reranker.compress_documents(PETS, PETS_QUERY)) == 2
    assert len(loaded_models()) == before


async def test_reranker_async_equals_sync(minilm_reranker: QZhouReranker) -> None:
    synchronous = minilm_reranker.compress_documents(PETS, PETS_QUERY)
    asynchronous = await minilm_reranker.acompress_documents(PETS, PETS_QUERY)
    assert synchronous == asynchronous


async def test_contextual_compression_retriever(
    minilm_embeddings: QZhouEmbeddings, minilm_reranker: QZhouReranker
) -> None:
    store = InMemoryVectorStore(embedding=minilm_embeddings)
    store.add_documents(copy.deepcopy(PETS))
    retriever = ContextualCompressionRetriever(
        base_compressor=QZhouReranker(encoder=minilm_reranker.encoder, top_n=2),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}),
    )
    found = retriever.invoke(PETS_QUERY)
    assert len(found) == 2 and found[0].id == "cats"
    scores = [d.metadata["relevance_score"] for d in found]
    assert scores == sorted(scores, reverse=True)
    assert [d.id for d in await retriever.ainvoke(PETS_QUERY)] == [d.id for d in found]


# -- async ------------------------------------------------------------------------------------------


async def test_concurrent_aembed_query_equals_sequential(minilm_embeddings: QZhouEmbeddings) -> None:
    queries = [
        f"Question {i}: what is the effect of compound {i} on {('cells', 'mice', 'humans')[i % 3]}?"
        for i in range(100)
    ]
    sequential = [minilm_embeddings.embed_query(query) for query in queries]

    ticks = 0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.002)

    beating = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    concurrent = await asyncio.gather(*(minilm_embeddings.aembed_query(query) for query in queries))
    elapsed = time.perf_counter() - started
    done.set()
    await beating

    np.testing.assert_allclose(np.array(concurrent), np.array(sequential), atol=1e-6)
    # The loop kept turning while the model worked: a blocking implementation would give ~1 tick.
    assert ticks >= 5, f"{ticks} heartbeats in {elapsed:.2f}s"


async def test_aembed_documents_equals_sync(minilm_embeddings: QZhouEmbeddings) -> None:
    np.testing.assert_allclose(
        await minilm_embeddings.aembed_documents(DOCUMENTS),
        minilm_embeddings.embed_documents(DOCUMENTS),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="query must not be empty"):
        await minilm_embeddings.aembed_query("")


# -- the example notebook -----------------------------------------------------------------------------


NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "langchain_rag.ipynb"


def execute_notebook(path: Path) -> Any:
    """Run ``path`` in a kernel of this very interpreter, whatever kernelspecs the machine has.

    An empty list of kernel directories makes jupyter_client fall back to ipykernel's native spec,
    which launches ``sys.executable``: a fresh CI virtualenv needs no ``ipykernel install`` step, and a
    user-level ``python3`` spec pointing at another Python cannot hijack the run.
    """
    import nbformat
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint('kernel prefix:', sys.prefix)"))
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(
        notebook, km=manager, timeout=600, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return notebook


def printed(notebook: Any) -> str:
    return "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


@pytest.mark.parametrize("data", ["scifact", "sample"])
def test_notebook_runs(data: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: Any) -> None:
    import sys

    shared = request.getfixturevalue("scifact_dir").parent if data == "scifact" else tmp_path
    monkeypatch.setenv("QZHOU_SHARED_DATA", str(shared))
    output = printed(execute_notebook(NOTEBOOK))
    assert f"kernel prefix: {sys.prefix}" in output
    assert output.startswith(f"{data}: ")
    assert "prefixes (query, document): ('', '')" in output
    assert "--- answer ---" in output
    if data == "scifact":
        assert "MMR then QZhouReranker:   hit@3 = " in output
    else:
        assert "Green tea: about 70 to 80 degrees Celsius" in output
