"""Bulk embedding in this process: the output format, resuming, refusals, bad input, compact formats.

Real models and real processes: all-MiniLM-L6-v2 (offline, the demo name) on SciFact abstracts, the
tiny QZhou-shaped checkpoint for the instructed side, and a child process that is SIGKILLed while it
writes. Abstracts are cut to 16 tokens (``max_length``): what is checked here (which id gets which
vector, exactly once) does not depend on how much of each abstract is kept, and it keeps the file fast.
The Ray job, and the 2,000-abstract comparison of every mode, are in ``test_bulk_ray.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from qzhou_plugins import DEMO_MODEL, Encoder, Task
from qzhou_plugins.bulk import (
    MANIFEST_NAME,
    CorpusError,
    OutputError,
    OutputMismatchError,
    dequantize,
    embed_corpus,
    export_quantized,
    iter_vectors,
    read_manifest,
)
from qzhou_plugins.bulk.corpus import open_source
from qzhou_plugins.bulk.options import add_embed_arguments, embed_from_arguments
from qzhou_plugins.bulk.output import FINGERPRINT_KEY, Output
from qzhou_plugins.cli import main as cli_main
from qzhou_plugins.documents import join_text_fields
from qzhou_plugins.evaluation import load_beir

MAX_LENGTH = 16
MINI = {"model": DEMO_MODEL, "max_length": MAX_LENGTH}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), "utf-8")
    return path


def stored(out: Path) -> dict[str, np.ndarray]:
    """id -> float32 vector of an output, read with plain pyarrow; fails on a repeated id."""
    table = pq.read_table(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id is stored twice"
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    return dict(zip(ids, vectors, strict=True))


def stored_metadata(out: Path) -> dict[str, dict[str, Any] | None]:
    """id -> metadata of an output, read back from the JSON text of its metadata column."""
    table = pq.read_table(out, columns=["id", "metadata"]).to_pydict()
    return {
        ident: None if text is None else json.loads(text)
        for ident, text in zip(table["id"], table["metadata"], strict=True)
    }


def cosines(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> np.ndarray:
    assert first.keys() == second.keys()
    a = np.stack([first[i] for i in first])
    b = np.stack([second[i] for i in first])
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of a folder with its size, modification time and content."""
    return {
        path.name: (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.iterdir())
        if path.name != ".lock"
    }


@pytest.fixture(scope="module")
def corpus_rows(scifact_corpus: list[dict[str, str]]) -> list[dict[str, str]]:
    return scifact_corpus[:200]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, corpus_rows: list[dict[str, str]]) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", corpus_rows)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A finished float32 output of the 200 abstracts, in shards of 64 rows, with the texts kept."""
    out = tmp_path_factory.mktemp("finished") / "out"
    embed_corpus(corpus_file, out, shard_rows=64, text_column=True, **MINI)
    return out


@pytest.fixture(scope="module")
def reference(corpus_rows: list[dict[str, str]], scifact_dir: Path) -> dict[str, np.ndarray]:
    """What the Encoder gives for the same abstracts, joined as `eval retrieval` joins them."""
    texts = load_beir(scifact_dir).corpus
    ids = [row["_id"] for row in corpus_rows]
    vectors = Encoder.shared(**MINI).encode_documents([texts[i] for i in ids])
    return dict(zip(ids, vectors, strict=True))


# -- the output -------------------------------------------------------------------------------------


def test_the_output_is_plain_parquet_with_the_fingerprint_and_a_manifest(
    finished: Path, reference: dict[str, np.ndarray], corpus_rows: list[dict[str, str]]
) -> None:
    vectors = stored(finished)
    assert vectors.keys() == reference.keys()  # every corpus id, once
    assert cosines(vectors, reference).min() >= 0.99999
    # each record's other fields beside its vector: for a BEIR corpus, its title
    assert stored_metadata(finished) == {row["_id"]: {"title": row["title"]} for row in corpus_rows}
    schema = pq.read_schema(next(finished.glob("part-*.parquet")))
    assert schema.field("id").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    fingerprint = json.loads(schema.metadata[FINGERPRINT_KEY])
    assert fingerprint["model"] == DEMO_MODEL
    assert (fingerprint["dimension"], fingerprint["side"], fingerprint["prefix"]) == (384, "document", "")
    assert (fingerprint["normalize"], fingerprint["max_length"], fingerprint["dtype"]) == (
        True,
        MAX_LENGTH,
        "float32",
    )
    manifest = read_manifest(finished)
    assert manifest["rows"] == 200 and manifest["fingerprint"] == fingerprint
    assert [shard["rows"] for shard in manifest["shards"]] == [64, 64, 64, 8]


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (["Tea", "is a drink."], "Tea is a drink."),  # title, a space, text
        (["is a drink."], "is a drink."),  # no title field: the text alone
        (["", " Water "], "Water"),  # an empty title adds no leading space
        ([" ", ""], ""),  # nothing: the callers refuse or set it aside
    ],
)
def test_title_and_text_are_joined_one_way(fields: list[str], text: str) -> None:
    """The one join that the bulk sources and ``eval retrieval``'s BEIR reader both call."""
    assert join_text_fields(fields) == text


def test_float16_halves_the_storage_and_keeps_the_vectors(
    tmp_path: Path, corpus_file: Path, finished: Path
) -> None:
    out = tmp_path / "half"
    embed_corpus(corpus_file, out, dtype="float16", shard_rows=64, **MINI)
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.float16(), 384)
    half, full = stored(out), stored(finished)
    assert cosines(half, full).min() >= 0.9999
    assert embedding_bytes(out) < 0.6 * embedding_bytes(finished)


def embedding_bytes(out: Path) -> int:
    """Bytes of the embedding column on disk, over every shard and row group."""
    total = 0
    for shard in out.glob("part-*.parquet"):
        metadata = pq.ParquetFile(shard).metadata
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            for column in range(row_group.num_columns):
                if row_group.column(column).path_in_schema.startswith("embedding"):
                    total += row_group.column(column).total_compressed_size
    return total


def test_the_query_side_gets_the_instruction(tmp_path: Path, tiny_qzhou_path: str) -> None:
    texts = ["what causes tides", "effect of aspirin on fever", "capital of France", "how do bees fly"]
    corpus = write_jsonl(tmp_path / "q.jsonl", [{"_id": f"q{i}", "text": t} for i, t in enumerate(texts)])
    encoder = Encoder.shared(model=tiny_qzhou_path)
    for side in ("query", "document"):
        out = tmp_path / side
        result = embed_corpus(
            corpus, out, model=tiny_qzhou_path, side=side, task="retrieval", text_fields=["text"]
        )
        vectors = stored(out)
        queries = dict(zip(vectors, encoder.encode_queries(texts, "retrieval"), strict=True))
        documents = dict(zip(vectors, encoder.encode_documents(texts, "retrieval"), strict=True))
        expected, other = (queries, documents) if side == "query" else (documents, queries)
        assert cosines(vectors, expected).min() >= 0.99999
        assert cosines(vectors, other).max() < 0.9999
        prefix = result.fingerprint["prefix"]
        assert prefix.startswith("Instruct: ") if side == "query" else prefix == ""


def test_a_parquet_source_gives_the_same_rows(
    tmp_path: Path, corpus_rows: list[dict[str, str]], finished: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for number, start in enumerate(range(0, 200, 120)):
        part = corpus_rows[start : start + 120]
        pq.write_table(
            pa.Table.from_pylist([{k: r[k] for k in ("_id", "title", "text")} for r in part]),
            source / f"{number}.parquet",
        )
    embed_corpus(source, tmp_path / "out", **MINI)
    assert cosines(stored(tmp_path / "out"), stored(finished)).min() >= 0.99999


# -- resuming and refusing ---------------------------------------------------------------------------

CHILD = """
import sys
from qzhou_plugins.bulk import embed_corpus
options = dict(model={model!r}, max_length={max_length}, shard_rows=20, show_progress=False)
embed_corpus(sys.argv[1], sys.argv[2], **options)
"""


def test_a_killed_driver_is_completed_by_a_rerun_exactly_once(
    tmp_path: Path, corpus_file: Path, finished: Path
) -> None:
    out = tmp_path / "out"
    code = CHILD.format(model=DEMO_MODEL, max_length=MAX_LENGTH)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", code, str(corpus_file), str(out)], env=env)
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("part-*.parquet"))) < 2 and child.poll() is None:
            assert time.monotonic() < deadline, "the child wrote no shards"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    before = len(stored(out))
    assert 40 <= before < 200 and not (out / MANIFEST_NAME).exists()
    result = embed_corpus(corpus_file, out, shard_rows=20, **MINI)
    assert (result.already_stored, result.added) == (before, 200 - before)
    assert cosines(stored(out), stored(finished)).min() >= 0.99999  # every id once, as a clean run
    assert not list(out.glob(".*.tmp-*"))


def test_a_rerun_of_a_finished_output_adds_nothing(finished: Path, corpus_file: Path) -> None:
    before = snapshot(finished)
    result = embed_corpus(corpus_file, finished, shard_rows=64, text_column=True, **MINI)
    assert (result.added, result.already_stored) == (0, 200)
    after = snapshot(finished)
    assert {k: v for k, v in after.items() if k != MANIFEST_NAME} == {
        k: v for k, v in before.items() if k != MANIFEST_NAME
    }
    assert after[MANIFEST_NAME][2] == before[MANIFEST_NAME][2]


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        ({"model": "tiny"}, "model: the output has 'all-MiniLM-L6-v2'"),
        ({"max_length": 64}, f"max length: the output has {MAX_LENGTH}, this run has 64"),
        ({"task": Task(name="mine", instruction="Represent this text: ", both_sides=True)}, "prefix"),
        ({"dtype": "float16"}, "dtype: the output has 'float32'"),
        ({"side": "query"}, "side: the output has 'document'"),
    ],
)
def test_a_rerun_made_another_way_is_refused_and_the_output_is_untouched(
    finished: Path, corpus_file: Path, tiny_qzhou_path: str, change: dict[str, Any], difference: str
) -> None:
    options = {**MINI, "shard_rows": 64, "text_column": True, **change}
    if options["model"] == "tiny":
        options["model"] = tiny_qzhou_path
    before = snapshot(finished)
    with pytest.raises(OutputMismatchError, match=difference):
        embed_corpus(corpus_file, finished, **options)
    assert snapshot(finished) == before


def test_another_corpus_or_a_second_writer_is_refused(
    finished: Path, corpus_rows: list[dict[str, str]], corpus_file: Path, tmp_path: Path
) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", corpus_rows[:50])
    with pytest.raises(OutputError, match=r"holds 150 id\(s\) that are not in .*other.jsonl"):
        embed_corpus(other, finished, shard_rows=64, text_column=True, **MINI)
    with Output(finished), pytest.raises(OutputError, match="another run is writing into"):
        embed_corpus(corpus_file, finished, shard_rows=64, text_column=True, **MINI)


# -- bad input: named before any model work ------------------------------------------------------------

GOOD = {"_id": "a", "title": "T", "text": "some text"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(GOOD), "{not json"], r"c\.jsonl:2: not valid JSON"),
        (
            [json.dumps(GOOD), json.dumps({"_id": "b", "title": "T"})],
            r"c\.jsonl:2: the text field 'text' of id 'b' is missing",
        ),
        ([json.dumps(GOOD), "", json.dumps(GOOD)], r"c\.jsonl:3: duplicate id 'a' \(first at .*c\.jsonl:1\)"),
        ([], r"the corpus is empty"),
        (["", "  "], r"the corpus is empty"),
        ([json.dumps({"title": "T", "text": "x"})], r"c\.jsonl:1: the id field '_id' is missing"),
        (
            [json.dumps(GOOD), json.dumps({"_id": "z", "title": "", "text": "\u200b\u200b"})],
            r"c\.jsonl:2: id 'z' has nothing to embed",
        ),
        ([json.dumps({"_id": "n", "title": "T", "text": 5})], r"field 'text' of id 'n' must be a string"),
        (["[1, 2]"], r"c\.jsonl:1: expected a JSON object"),
        # metadata that `QZhouCollection.add` (and so `load`) would refuse, refused here first
        ([json.dumps({**GOOD, "$and": 1})], r"c\.jsonl:1: metadata has the key '\$and': Chroma reserves"),
        (['{"_id": "a", "title": "T", "text": "x", "year": NaN}'], r"c\.jsonl:1: field 'year' is NaN"),
        (
            [json.dumps({**GOOD, "n": 2**64})],
            r"c\.jsonl:1: field 'n' is 18446744073709551616, beyond the 64-bit",
        ),
        (
            ['{"_id": "a", "title": "T", "text": "x", "by": "\\udfff"}'],
            r"c\.jsonl:1: field 'by' holds a lone surrogate",
        ),
    ],
)
def test_bad_corpus_lines_are_named_before_any_model_work(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(line + "\n" for line in lines), "utf-8")
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match=message):  # a missing model would fail later, if it were loaded
        embed_corpus(corpus, out, model=str(tmp_path / "no-such-model"))
    assert not out.exists()


def test_bad_parquet_sources_are_named(tmp_path: Path) -> None:
    pq.write_table(pa.table({"_id": ["a", None], "text": ["x", "y"]}), tmp_path / "ids.parquet")
    with pytest.raises(CorpusError, match=r"ids\.parquet row 2: the id field '_id' is missing"):
        embed_corpus(tmp_path / "ids.parquet", tmp_path / "out", model="none", text_fields=["text"])
    with pytest.raises(CorpusError, match=r"no column\(s\) 'title'"):
        embed_corpus(tmp_path / "ids.parquet", tmp_path / "out", model="none")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(CorpusError, match=r"bad\.parquet: not a readable parquet file"):
        embed_corpus(tmp_path / "bad.parquet", tmp_path / "out", model="none")


def metadata_of(source: Any) -> list[dict[str, Any] | None]:
    """Each row's metadata as a source reads it (no model: what the scan checks and the shards keep)."""
    return [None if text is None else json.loads(text) for rows in source.batches() for text in rows.metadata]


def test_record_metadata_is_the_other_fields_or_the_ones_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = [
        {"_id": "a", "title": "Tea", "text": "Green.", "year": 2020, "tags": ["x"], "meta": {}, "url": None},
        {"_id": "b", "title": "Coffee", "text": "Roasted.", "source": "pubmed", "ok": True, "score": 0.5},
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    default = [
        {
            "title": "Tea",
            "year": 2020,
            "tags": '["x"]',
        },  # nested as JSON text, as index keeps it; no null or {}
        {"title": "Coffee", "source": "pubmed", "ok": True, "score": 0.5},  # names as given
    ]
    assert metadata_of(open_source(corpus)) == default
    assert metadata_of(open_source(corpus, text_fields=["text"])) == default
    assert metadata_of(open_source(corpus, metadata_fields=["year", "url"])) == [{"year": 2020}, None]
    assert metadata_of(open_source(corpus, metadata_fields=[])) == [None, None]
    with pytest.raises(ValueError, match="the id field '_id' is each row's id, not metadata"):
        open_source(corpus, metadata_fields=["_id"])
    table = pa.table(
        {
            "_id": ["a", "b"],
            "title": ["Tea", "Coffee"],
            "text": ["Green.", "Roasted."],
            "year": pa.array([2020, None], pa.int64()),
            "tags": [["x"], ["y", "z"]],
            "seen": pa.array([0, 1], pa.timestamp("s")),
        }
    )
    pq.write_table(table, tmp_path / "c.parquet")
    parquet = open_source(tmp_path / "c.parquet")
    assert "column(s) 'seen' left out of the metadata" in caplog.text
    assert metadata_of(parquet) == [
        {"title": "Tea", "year": 2020, "tags": '["x"]'},
        {"title": "Coffee", "tags": '["y", "z"]'},
    ]
    with pytest.raises(
        CorpusError, match=r"c\.parquet: column 'seen' is timestamp\[\w+\], which Chroma cannot"
    ):
        open_source(tmp_path / "c.parquet", metadata_fields=["seen"])
    with pytest.raises(CorpusError, match=r"c\.parquet: no column 'nope'"):
        open_source(tmp_path / "c.parquet", metadata_fields=["nope"])


def test_bad_arguments_are_refused_before_reading(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    for options, message in [
        ({"side": "passage"}, "side must be one of document, query"),
        ({"dtype": "int8"}, "dtype must be one of float32, float16"),
        ({"actors": 2}, "they need ray"),
        ({"task": "retreival"}, "Unknown task 'retreival'"),
        ({"shard_rows": 0}, "shard_rows must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            embed_corpus(missing, tmp_path / "out", model=DEMO_MODEL, **options)
    with pytest.raises(CorpusError, match="no such file or folder"):
        embed_corpus(missing, tmp_path / "out", model=DEMO_MODEL)


def test_without_ray_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, corpus_file: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    with pytest.raises(ImportError, match=r"pip install 'qzhou-plugins\[ray\]'"):
        embed_corpus(corpus_file, tmp_path / "out", ray=True, **MINI)


# -- compact formats and reading back -------------------------------------------------------------------


def test_int8_and_binary_exports_record_their_calibration(finished: Path, tmp_path: Path) -> None:
    vectors = stored(finished)
    matrix = np.stack(list(vectors.values()))
    exported = export_quantized(finished, tmp_path / "int8", "int8")
    ranges = np.asarray(exported["quantization"]["ranges"], dtype=np.float32)
    np.testing.assert_allclose(ranges, [matrix.min(axis=0), matrix.max(axis=0)])
    table = pq.read_table(tmp_path / "int8")
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 384)
    assert (
        json.loads(table.schema.metadata[b"qzhou:quantization"])["ranges"]
        == exported["quantization"]["ranges"]
    )
    codes = np.asarray(table.column("embedding").to_pylist())
    restored = dequantize(codes, "int8", 384, ranges)
    original = np.stack([vectors[i] for i in table.column("id").to_pylist()])
    step = (ranges[1] - ranges[0]) / 255
    assert np.all(np.abs(restored - original) <= step / 2 + 1e-6)
    export_quantized(finished, tmp_path / "bits", "binary")
    binary = pq.read_table(tmp_path / "bits")
    bits = np.unpackbits(np.asarray(binary.column("embedding").to_pylist(), dtype=np.uint8), axis=1)
    assert np.array_equal(
        bits.astype(bool), np.stack([vectors[i] for i in binary.column("id").to_pylist()]) > 0
    )
    assert export_quantized(finished, tmp_path / "int8", "int8") == exported  # done already: kept as it is
    with pytest.raises(OutputError, match="already exists"):
        export_quantized(finished, tmp_path / "int8", "binary")


def test_iter_vectors_streams_batches_with_the_fingerprint(finished: Path, tmp_path: Path) -> None:
    batches = list(iter_vectors(finished, batch_size=50))
    assert max(len(batch.ids) for batch in batches) <= 50
    ids = [i for batch in batches for i in batch.ids]
    assert sorted(ids) == sorted(stored(finished)) and all(batch.texts for batch in batches)
    assert all(
        batch.vectors.dtype == np.float32 and batch.fingerprint["model"] == DEMO_MODEL for batch in batches
    )
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(OutputError, match="the embedding run has not finished"):
        next(iter_vectors(unfinished))


def test_the_command_line(tmp_path: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_embed_arguments(argparse.ArgumentParser(prog="embed"))
    out = tmp_path / "cli"
    flags = [
        str(corpus_file),
        "--out",
        str(out),
        "--model",
        DEMO_MODEL,
        "--max-length",
        str(MAX_LENGTH),
        "--dtype",
        "float16",
    ]
    args = parser.parse_args([*flags, "--export", "int8", "--no-metadata"])
    assert embed_from_arguments(args) == 0
    printed = capsys.readouterr().out
    assert "Embedded 200 row(s)" in printed and "float16" in printed
    assert set(stored_metadata(out).values()) == {None}
    assert parser.parse_args([*flags, "--metadata-fields", "title,year"]).metadata_fields == ["title", "year"]
    with pytest.raises(SystemExit):  # one or the other
        parser.parse_args([*flags, "--metadata-fields", "title", "--no-metadata"])
    assert read_manifest(tmp_path / "cli-int8")["quantization"]["precision"] == "int8"
    assert parser.parse_args([*flags, "--ray"]).ray == "local"
    assert parser.parse_args([*flags, "--ray=auto", "--actors", "2"]).ray == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args([*flags, "--actors", "0"])


# -- a folder of documents: chunked as `index` chunks them, with the ids it stores -------------------

DOCUMENTS = REPO / "examples" / "documents"
CHUNKING = ["--chunk-size", "400", "--chunk-overlap", "40"]
"""Smaller chunks than the default, so that files give several and the flags are seen to reach both."""


Indexed = dict[str, tuple[str, np.ndarray, dict[str, Any]]]


@pytest.fixture(scope="module")
def indexed_documents(tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    """id -> (text, vector, metadata) of the example documents as ``qzhou-plugins index`` stores them."""
    chromadb = pytest.importorskip("chromadb")
    database = tmp_path_factory.mktemp("index") / "db"
    flags = ["-c", "notes", "--db", str(database), "--model", DEMO_MODEL, "--max-length", str(MAX_LENGTH)]
    assert cli_main(["index", str(DOCUMENTS), *flags, *CHUNKING]) == 0
    stored = chromadb.PersistentClient(path=str(database)).get_collection("notes")
    found = stored.get(include=["documents", "embeddings", "metadatas"])
    rows = zip(found["ids"], found["documents"], found["embeddings"], found["metadatas"], strict=True)
    return {ident: (text, np.asarray(vector, np.float32), metadata) for ident, text, vector, metadata in rows}


def test_documents_get_the_chunks_and_ids_that_index_stores(
    tmp_path: Path, indexed_documents: Indexed, capsys: pytest.CaptureFixture[str]
) -> None:
    """`embed` of a folder and `index` of it agree chunk for chunk: same ids, texts, metadata and
    vectors, so that loading the output into Chroma gives the collection `index` would have built."""
    out = tmp_path / "out"
    flags = ["--out", str(out), "--model", DEMO_MODEL, "--max-length", str(MAX_LENGTH), "--with-text"]
    assert cli_main(["embed", str(DOCUMENTS), *flags, *CHUNKING]) == 0
    assert f"Embedded {len(indexed_documents)} row(s)" in capsys.readouterr().out
    table = pq.read_table(out).to_pydict()
    assert sorted(table["id"]) == sorted(indexed_documents)  # every chunk, once, under index's id
    assert len(indexed_documents) > len(list(DOCUMENTS.iterdir()))  # several chunks per file
    assert {i: t for i, t in zip(table["id"], table["text"], strict=True)} == {
        i: text for i, (text, _, _) in indexed_documents.items()
    }
    # source, line (.jsonl) and chunk, and a .jsonl document's own fields, as index records them
    assert stored_metadata(out) == {i: metadata for i, (_, _, metadata) in indexed_documents.items()}
    vectors = cosines(stored(out), {i: vector for i, (_, vector, _) in indexed_documents.items()})
    assert vectors.min() >= 0.9999
    source = read_manifest(out)["source"]
    assert (source["kind"], source["chunk_size"], source["chunk_overlap"]) == ("documents", 400, 40)
    assert embed_corpus(DOCUMENTS, out, chunk_size=400, chunk_overlap=40, text_column=True, **MINI).added == 0
    with pytest.raises(OutputError, match="not in"):  # other chunks are another corpus, never mixed in
        embed_corpus(DOCUMENTS, out, text_column=True, **MINI)


def test_documents_on_ray_give_the_same_chunks(
    tmp_path: Path, indexed_documents: Indexed, ray_session: None
) -> None:
    """Ray's read tasks chunk the files themselves, with the source names the driver gave them."""
    out = tmp_path / "ray"
    embed_corpus(DOCUMENTS, out, chunk_size=400, chunk_overlap=40, ray=True, **MINI)
    vectors = stored(out)
    assert vectors.keys() == indexed_documents.keys()
    assert cosines(vectors, {i: vector for i, (_, vector, _) in indexed_documents.items()}).min() >= 0.9999
    assert stored_metadata(out) == {i: metadata for i, (_, _, metadata) in indexed_documents.items()}


def test_a_folder_of_one_kind_or_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Parquet folders and document folders are told apart; what cannot be told apart is refused."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pa.table({"_id": ["a"], "title": ["T"], "text": ["x"]}), mixed / "rows.parquet")
    assert open_source(mixed).kind == "parquet"
    (mixed / "notes.md").write_text("# Notes\n\nSome text.\n", "utf-8")
    beir = tmp_path / "beir"
    beir.mkdir()
    write_jsonl(beir / "corpus.jsonl", [GOOD])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q", "text": "a question"}])
    (tmp_path / "empty").mkdir()
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "data.txt").write_bytes(b"\x00\x01")
    for folder, message in [
        (mixed, r"mixed: holds both \.parquet files \(1\) and documents \(1 .*ambiguous"),
        (beir, r"beir: a BEIR folder .*give its corpus: .*beir/corpus\.jsonl"),
        (tmp_path / "empty", r"empty: no \.parquet files or documents \(\.txt, \.md, \.jsonl, \.pdf, \.html"),
        (tmp_path / "binary", r"binary: the corpus is empty"),
    ]:
        with pytest.raises(CorpusError, match=message):
            embed_corpus(folder, tmp_path / "out", model=str(tmp_path / "no-such-model"))
    assert "data.txt: skipped, a binary file" in caplog.text
    assert open_source(beir / "corpus.jsonl").kind == "jsonl"
    assert open_source(mixed / "notes.md").kind == "documents"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "fine"}\n{"text": "tea", "year": NaN}\n', r"d\.jsonl:2: field 'year' is NaN"),
        ('{"text": "fine"}\n{"title": "no text"}\n', r"d\.jsonl:2: the 'text' field is missing"),
        ('{"text": "tea \\ud800"}\n', r"d\.jsonl:1: the 'text' field holds a lone surrogate"),
        ("not json\n", r"d\.jsonl:1: not valid JSON"),
    ],
)
def test_bad_documents_are_named_before_any_model_work(tmp_path: Path, content: str, message: str) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "d.jsonl").write_text(content, "utf-8")
    with pytest.raises(CorpusError, match=message):
        embed_corpus(folder, tmp_path / "out", model=str(tmp_path / "no-such-model"))
    (folder / "d.jsonl").unlink()
    (folder / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.txt is not UTF-8 text .*at byte 3, line 1"):
        embed_corpus(folder, tmp_path / "out", model=str(tmp_path / "no-such-model"))


def test_options_of_the_other_kind_of_source_are_refused(tmp_path: Path, corpus_file: Path) -> None:
    for options, message in [
        ({"chunk_size": 0}, "chunk_size must be at least 1"),
        ({"chunk_overlap": 1000}, r"chunk_overlap \(1000\) must be less than chunk_size \(1000\)"),
        ({"chunk_overlap": -1}, "chunk_overlap must be at least 0"),
        ({"text_fields": ["text"]}, "documents have no id or text fields"),
        ({"id_field": "path"}, "documents have no id or text fields"),
        ({"metadata_fields": ["source"]}, "carries the metadata index records for it"),
    ]:
        with pytest.raises(ValueError, match=message):
            embed_corpus(DOCUMENTS, tmp_path / "out", model="none", **options)
    with pytest.raises(ValueError, match="chunk_size and chunk_overlap cut documents"):
        embed_corpus(corpus_file, tmp_path / "out", model="none", chunk_size=500)
    parser = add_embed_arguments(argparse.ArgumentParser(prog="embed"))
    flags = [str(DOCUMENTS), "--out", "o", "--model", "m"]
    assert (parser.parse_args(flags).chunk_size, parser.parse_args(flags).chunk_overlap) == (None, None)
    for bad in (["--chunk-size", "0"], ["--chunk-overlap", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*flags, *bad])
    assert not (tmp_path / "out").exists()
