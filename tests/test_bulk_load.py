"""Loading a bulk output into Chroma: same answers as ``add``, no re-embedding, resumable, refusals.

Real models, real Chroma databases in temporary folders: all-MiniLM-L6-v2 (offline, the demo name)
on 300 SciFact abstracts cut at 64 tokens, and the tiny QZhou-shaped checkpoint for the instructed
query side. The ``load`` command runs in this process through ``main`` and, where it must prove that
no model is needed, as a child process with the model's folder moved away.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qzhou_plugins import DEMO_MODEL, Encoder, Task
from qzhou_plugins.bulk import MANIFEST_NAME, OutputError, embed_corpus, iter_vectors
from qzhou_plugins.chroma import CollectionMismatchError, QZhouCollection
from qzhou_plugins.cli import main
from qzhou_plugins.evaluation import load_beir
from test_bulk import DOCUMENTS, write_jsonl

MAX_LENGTH = 64
MINI = {"model": DEMO_MODEL, "max_length": MAX_LENGTH}
ROWS = 300


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parquet_vectors(output: Path) -> dict[str, np.ndarray]:
    return {i: v for batch in iter_vectors(output) for i, v in zip(batch.ids, batch.vectors, strict=True)}


def stored_records(collection: QZhouCollection) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """id -> (document, metadata) of every record of a collection."""
    found = collection.collection.get(include=["documents", "metadatas"])
    return dict(zip(found["ids"], zip(found["documents"], found["metadatas"], strict=True), strict=True))


def stored_vectors(collection: QZhouCollection) -> dict[str, np.ndarray]:
    found = collection.collection.get(include=["embeddings"])
    return dict(zip(found["ids"], np.asarray(found["embeddings"], dtype=np.float32), strict=True))


@pytest.fixture(scope="module")
def rows(scifact_corpus: list[dict[str, str]]) -> list[dict[str, str]]:
    return scifact_corpus[:ROWS]


@pytest.fixture(scope="module")
def texts(rows: list[dict[str, str]], scifact_dir: Path) -> dict[str, str]:
    """id -> text, joined as the bulk job joins a BEIR corpus (title, a space, text)."""
    corpus = load_beir(scifact_dir).corpus
    return {row["_id"]: corpus[row["_id"]] for row in rows}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bulk-load")


@pytest.fixture(scope="module")
def output(folder: Path, rows: list[dict[str, str]]) -> Path:
    """The 300 abstracts embedded as `embed` does by default (no texts kept), in 3 shards."""
    out = folder / "vectors"
    embed_corpus(write_jsonl(folder / "corpus.jsonl", rows), out, shard_rows=128, **MINI)
    return out


@pytest.fixture(scope="module")
def database(folder: Path) -> Path:
    return folder / "db"


@pytest.fixture(scope="module")
def added(database: Path, texts: dict[str, str], rows: list[dict[str, str]]) -> QZhouCollection:
    """The same abstracts, with their corpus ids and titles, through `add` (the model embeds them here)."""
    collection = QZhouCollection.open("added", path=database, **MINI)
    titles = {row["_id"]: {"title": row["title"]} for row in rows}
    collection.add(list(texts.values()), metadatas=[titles[i] for i in texts], ids=list(texts))
    return collection


@pytest.fixture(scope="module")
def loaded(database: Path, output: Path) -> QZhouCollection:
    """The output loaded by the command into a new collection, 100 vectors per write."""
    code = main(["load", str(output), "--collection", "loaded", "--db", str(database), "--batch-size", "100"])
    assert code == 0
    return QZhouCollection.open("loaded", path=database, create=False)


# -- the same collection as `add`, without the model ------------------------------------------------


def test_load_answers_like_add(
    loaded: QZhouCollection, added: QZhouCollection, scifact_queries: list[dict[str, str]]
) -> None:
    assert loaded.count() == added.count() == ROWS
    # the same ids with the same metadata (each record's title); the output kept no texts to compare
    by_load, by_add = stored_records(loaded), stored_records(added)
    assert {i: metadata for i, (_, metadata) in by_load.items()} == {i: m for i, (_, m) in by_add.items()}
    questions = [query["text"] for query in scifact_queries[:8]]
    for by_load, by_add in zip(loaded.query(questions), added.query(questions), strict=True):
        assert [hit.id for hit in by_load.hits] == [hit.id for hit in by_add.hits]
        assert np.allclose([h.distance for h in by_load.hits], [h.distance for h in by_add.hits], atol=1e-5)


def test_the_vectors_are_stored_as_given_with_the_outputs_setup(
    loaded: QZhouCollection, output: Path
) -> None:
    expected, found = parquet_vectors(output), stored_vectors(loaded)
    assert found.keys() == expected.keys()
    # as given, to the last bits that Chroma's cosine space changes when it normalises them again
    assert max(np.abs(found[i] - expected[i]).max() for i in expected) < 1e-6
    assert loaded.collection.get(limit=3, include=["documents"])["documents"] == [None] * 3
    recorded = loaded.embedding_function.get_config()
    assert recorded["model"] == DEMO_MODEL and recorded["max_length"] == MAX_LENGTH
    assert recorded["query_prefix"] == recorded["document_prefix"] == ""


def test_the_command_says_what_it_did_and_a_rerun_adds_nothing(
    loaded: QZhouCollection, output: Path, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "load", output, "-c", "loaded", "--db", database)
    assert code == 0
    assert f"0 vector(s) added, {ROWS} already there; the collection holds {ROWS}" in out
    assert f"Model {DEMO_MODEL}, query prefix ''" in out
    assert "no documents were stored" in out
    again = loaded.add_precomputed(output, show_progress=False)
    assert (again.added, again.skipped, loaded.count()) == (0, ROWS, ROWS)


def test_a_partial_collection_gets_only_the_rest(
    output: Path, database: Path, texts: dict[str, str], loaded: QZhouCollection
) -> None:
    collection = QZhouCollection.open_precomputed("partial", output, path=database)
    first = dict(list(texts.items())[:48])
    # as an interrupted load would leave it (what is there came from `add`: comparable vectors)
    collection.add(list(first.values()), ids=list(first))
    result = collection.add_precomputed(output, batch_size=64)
    assert (result.added, result.skipped, collection.count()) == (ROWS - 48, 48, ROWS)
    assert not result.conflicts  # the output has no texts to compare with the stored ones
    expected, found = parquet_vectors(output), stored_vectors(collection)
    rest = [i for i in texts if i not in first]
    assert max(np.abs(found[i] - expected[i]).max() for i in rest) < 1e-6
    # and the other way round: `add` of loaded texts with their corpus ids embeds and writes nothing
    again = loaded.add(list(first.values())[:5], ids=list(first)[:5])
    assert (again.added, again.skipped, loaded.count()) == (0, 5, ROWS)
    assert again.conflicts == tuple(first)[:5]  # stored without the text `add` was given: said so


def test_kept_texts_become_the_documents(
    folder: Path, rows: list[dict[str, str]], texts: dict[str, str]
) -> None:
    out = folder / "with-text"
    embed_corpus(write_jsonl(folder / "few.jsonl", rows[:12]), out, text_column=True, **MINI)
    client = chromadb.EphemeralClient()
    collection = QZhouCollection.open_precomputed("documents", out, client=client)
    assert collection.add_precomputed(out).added == 12
    added = QZhouCollection.open("documents-added", client=client, **MINI)
    added.add([texts[row["_id"]] for row in rows[:12]], [{"title": row["title"]} for row in rows[:12]])
    # what `add` stores for the same records, ids aside (add's are content ids, load's the corpus ids)
    by_load = stored_records(collection)
    assert sorted(by_load.values(), key=str) == sorted(stored_records(added).values(), key=str)
    assert {i: document for i, (document, _) in by_load.items()} == {i: texts[i] for i in by_load}


def test_a_folder_of_documents_loads_as_index_stores_it(
    folder: Path, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`embed --with-text` of a folder then `load` gives the collection `index` gives: same ids,
    documents and metadata, so `query` shows each hit's source (path:line, chunk) alike."""
    model = ["--model", DEMO_MODEL, "--max-length", MAX_LENGTH]
    assert run(capsys, "index", DOCUMENTS, "-c", "indexed", "--db", database, *model)[0] == 0
    out = folder / "documents"
    assert run(capsys, "embed", DOCUMENTS, "--out", out, "--with-text", *model)[0] == 0
    assert run(capsys, "load", out, "-c", "notes", "--db", database)[0] == 0
    loaded = QZhouCollection.open("notes", path=database, create=False)
    indexed = QZhouCollection.open("indexed", path=database, create=False)
    assert stored_records(loaded) == stored_records(indexed)
    assert {"source", "chunk", "line", "term"} <= {k for _, m in stored_records(loaded).values() for k in m}
    sources = []
    for name in ("notes", "indexed"):
        code, printed, _ = run(capsys, "query", "a lidded bowl to brew tea", "-c", name, "--db", database)
        assert code == 0
        sources.append(re.findall(r"^\d+\. \S+  (.+)$", printed, flags=re.MULTILINE))
    assert sources[0][0] == sources[1][0] and re.fullmatch(
        r".*glossary\.jsonl:\d+ \(chunk 0\)", sources[0][0]
    )
    assert all(
        re.fullmatch(r".*documents/[\w-]+\.(md|txt|jsonl)(:\d+)? \(chunk \d+\)", s) for s in sources[0]
    )


def test_an_output_without_metadata_still_loads_and_altered_metadata_is_refused(
    output: Path, tmp_path: Path
) -> None:
    """Outputs written before shards kept metadata load as they are; metadata altered after `embed`
    checked it is refused as `add` refuses it, naming the shard and row, before its batch is written."""
    older, altered = tmp_path / "older", tmp_path / "altered"
    shutil.copytree(output, older)
    shutil.copytree(output, altered)
    for shard in sorted(older.glob("part-*.parquet")):
        table = pq.read_table(shard)  # the schema keeps the fingerprint
        pq.write_table(table.drop_columns(["metadata"]), shard)
    client = chromadb.EphemeralClient()
    collection = QZhouCollection.open_precomputed("older", older, client=client)
    assert collection.add_precomputed(older).added == ROWS
    assert {metadata for _, metadata in stored_records(collection).values()} == {None}
    first = sorted(altered.glob("part-*.parquet"))[0]
    table = pq.read_table(first)
    column = table.column("metadata").to_pylist()
    column[1] = '{"year": NaN}'
    pq.write_table(
        table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(column)), first
    )
    collection = QZhouCollection.open_precomputed("altered", altered, client=client)
    with pytest.raises(ValueError, match=r"part-000001\.parquet row 2: metadata\['year'\] is nan"):
        collection.add_precomputed(altered, batch_size=64)
    assert collection.count() == 0


# -- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "difference"),
    [
        ("model", {"model": "tiny"}, "model: the collection has '/"),
        ("task", {"task": Task(name="mine", instruction="Represent this text: ", both_sides=True)}, "prefix"),
        ("length", {"max_length": 32}, "max length: the collection has 32, the output has 64"),
        ("default", {}, "max length: the collection has 256, the output has 64"),  # the model's own
    ],
)
def test_a_collection_made_another_way_is_refused_and_left_untouched(
    output: Path, database: Path, tiny_qzhou_path: str, name: str, options: dict[str, Any], difference: str
) -> None:
    options = {"model": DEMO_MODEL, **options}
    if options["model"] == "tiny":
        options["model"] = tiny_qzhou_path
    collection = QZhouCollection.open(name, path=database, **options)
    collection.add(["a text already there"], ids=["there"])
    with pytest.raises(CollectionMismatchError, match=difference):
        QZhouCollection.open_precomputed(name, output, path=database)
    with pytest.raises(CollectionMismatchError, match=difference):
        collection.add_precomputed(output)
    assert collection.collection.get()["ids"] == ["there"]


def test_the_command_refuses_with_one_line(
    output: Path, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromadb.PersistentClient(path=str(database.absolute())).get_or_create_collection("plain")
    code, _, err = run(capsys, "load", output, "-c", "plain", "--db", database)
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "was not made with QZhouEmbeddingFunction" in err
    code, _, err = run(capsys, "load", output, "-c", "plain", "--db", database, "--batch-size", "0")
    assert code == 2 and "--batch-size" in err


def test_query_vectors_and_unfinished_outputs_are_refused(
    folder: Path, output: Path, rows: list[dict[str, str]], tmp_path: Path
) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    queries = folder / "queries"
    embed_corpus(write_jsonl(tmp_path / "q.jsonl", rows[:4]), queries, side="query", **MINI)
    with pytest.raises(ValueError, match=r"holds query-side vectors .* --side document"):
        QZhouCollection.open_precomputed("queries", queries, client=client)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(output, unfinished)
    (unfinished / MANIFEST_NAME).unlink()
    with pytest.raises(OutputError, match="the embedding run has not finished"):
        QZhouCollection.open_precomputed("unfinished", unfinished, client=client)
    with pytest.raises(OutputError, match="no such folder"):
        QZhouCollection.open_precomputed("missing", tmp_path / "missing", client=client)
    assert client.list_collections() == []  # nothing was created
    collection = QZhouCollection.open_precomputed("fine", output, client=client)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, not 0"):
        collection.add_precomputed(output, batch_size=0)


# -- QZhou: the recorded instruction, and no model needed to load ------------------------------------


def test_an_instructed_output_loads_without_the_model_and_queries_with_its_prefix(
    tmp_path: Path, tiny_qzhou_path: str
) -> None:
    model = tmp_path / "tiny-qzhou"
    shutil.copytree(tiny_qzhou_path, model)
    passages = ["tides follow the moon", "aspirin lowers fever", "Paris is in France", "bees beat wings"]
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"_id": f"d{i}", "text": t} for i, t in enumerate(passages)])
    out, database = tmp_path / "vectors", tmp_path / "db"
    result = embed_corpus(corpus, out, model=str(model), task="retrieval", text_fields=["text"])
    model.rename(tmp_path / "away")  # loading must not need it: a fresh process, no model folder
    command = [
        sys.executable,
        "-m",
        "qzhou_plugins.cli",
        "load",
        str(out),
        "-c",
        "tiny",
        "--db",
        str(database),
    ]
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "4 vector(s) added" in done.stdout
    (tmp_path / "away").rename(model)
    collection = QZhouCollection.open("tiny", path=database, create=False)
    query_prefix = result.fingerprint["query_prefix"]
    assert query_prefix.startswith("Instruct: ") and collection.embedding_function.prefixes[0] == query_prefix
    questions = ["what causes tides", "what lowers a fever"]
    expected = Encoder.shared(model=str(model)).encode_queries(questions, "retrieval")
    np.testing.assert_allclose(collection.embedding_function.embed_queries(questions), expected, atol=1e-6)
    vectors = parquet_vectors(out)
    ids = list(vectors)
    by_hand = [ids[int(row.argmax())] for row in expected @ np.stack(list(vectors.values())).T]
    assert [result.hits[0].id for result in collection.query(questions, n_results=1)] == by_hand
