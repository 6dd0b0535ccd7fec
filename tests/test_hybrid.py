"""Hybrid search in the Chroma helper: the lexical index beside a collection, in step on every write path
(a SIGKILL between the two writes included), filters in every mode, the fusion, and bad input.

Real Chroma databases in temporary folders, all-MiniLM-L6-v2 (the demo name) for the dense side, the
FTS5 engine unless said otherwise. Every stored text carries a marker word of its own (``ref01``...), so
that "the lexical index holds this id with this text" is one lexical search.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import chromadb
import pytest

from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.bulk import embed_corpus
from qzhou_plugins.chroma import (
    CollectionMismatchError,
    LexicalUnavailableError,
    QZhouCollection,
    QZhouEmbeddingFunction,
    UpsertResult,
)
from qzhou_plugins.lexical import fts5_index
from test_bulk import write_jsonl

CHILD = Path(__file__).with_name("chroma_child.py")
CORPUS = [
    ("pets-1", "The cat slept on the warm windowsill all afternoon. ref01", "pets"),
    ("pets-2", "Dogs are loyal companions and love long walks in the park. ref02", "pets"),
    ("cities-1", "Paris is the capital and largest city of France. ref03", "cities"),
    ("cities-2", "Berlin became the capital of reunified Germany in 1990. ref04", "cities"),
    ("finance-1", "The stock market fell sharply after the interest rate announcement. ref05", "finance"),
    ("finance-2", "Central banks raise interest rates to slow down inflation. ref06", "finance"),
    ("parts-1", "Replacement seal kit XK-2291 fits the 2019 garden pump. ref07", "parts"),
    ("parts-2", "Error code E4711 means the pump motor overheated and stopped. ref08", "parts"),
]
IDS = [id_ for id_, _, _ in CORPUS]
MARKER = re.compile(r"\bref\w+")


def filled(tmp_path: Path, name: str = "notes", **options: Any) -> QZhouCollection:
    collection = QZhouCollection.open(name, path=tmp_path / "db", model=DEMO_MODEL, **options)
    collection.add([text for _, text, _ in CORPUS], [{"topic": t} for _, _, t in CORPUS], ids=IDS)
    return collection


def assert_in_step(collection: QZhouCollection) -> None:
    """The lexical index holds exactly Chroma's ids, each with Chroma's text, and nothing pending."""
    index = collection.lexical.index
    assert index is not None and index.pending() == []
    stored = collection.collection.get(include=["documents"])
    assert sorted(index.ids()) == sorted(stored["ids"])
    for id_, document in zip(stored["ids"], stored["documents"], strict=True):
        for marker in MARKER.findall(document or ""):
            assert [hit.id for hit in index.search(marker, 5)] == [id_], (id_, marker)


def found(collection: QZhouCollection, text: str, **options: Any) -> list[str]:
    return [hit.id for hit in collection.query(text, **options)[0].hits]


# -- every write path -----------------------------------------------------------------------------------


def test_add_upsert_and_delete_keep_the_lexical_index_in_step(tmp_path: Path) -> None:
    collection = filled(tmp_path)
    assert collection.lexical.folder == tmp_path / "db" / "qzhou-lexical" / "notes"
    assert_in_step(collection)
    assert collection.add([CORPUS[0][1]], [{"topic": "pets"}], ids=["pets-1"]).skipped == 1
    changed = ["The cat now sleeps in a basket by the stove. ref01x", "A parrot repeats every word. ref09"]
    result = collection.upsert(changed, ids=["pets-1", "pets-3"], metadatas=[{"mood": "calm"}, None])
    assert result == UpsertResult(added=1, updated=1, unchanged=0)
    assert_in_step(collection)
    assert found(collection, "ref01", mode="lexical") == []
    assert found(collection, "ref01x", mode="lexical") == ["pets-1"]
    replaced = collection.collection.get(ids=["pets-1"], include=["metadatas"])["metadatas"][0]
    assert replaced == {"mood": "calm"}  # replaced, not merged with {"topic": "pets"}
    assert collection.upsert(changed[:1], ids=["pets-1"], metadatas=[{"mood": "calm"}]) == UpsertResult(
        0, 0, 1
    )
    assert collection.delete(["cities-1", "no-such-id"]) == 1
    assert collection.delete(where={"topic": "finance"}) == 2
    assert collection.delete(where_document={"$contains": "pump"}) == 2
    assert_in_step(collection)
    assert collection.count() == 4
    with pytest.raises(ValueError, match="delete needs ids=, where= or where_document="):
        collection.delete()
    with pytest.raises(TypeError, match="upsert needs ids="):
        collection.upsert(["text"], ids=None)  # type: ignore[arg-type]


def test_loading_a_bulk_output_keeps_the_lexical_index_in_step(tmp_path: Path) -> None:
    """``load`` with texts indexes them; without texts, each record is indexed as an empty text."""
    rows = [{"_id": id_, "title": "", "text": text} for id_, text, _ in CORPUS]
    for with_text in (True, False):
        out = tmp_path / f"vectors-{with_text}"
        embed_corpus(
            write_jsonl(tmp_path / "corpus.jsonl", rows), out, model=DEMO_MODEL, text_column=with_text
        )
        collection = QZhouCollection.open_precomputed(f"loaded-{with_text}", out, path=tmp_path / "db")
        assert collection.add_precomputed(out).added == len(rows)
        assert_in_step(collection)
        assert found(collection, "XK-2291", mode="lexical") == (["parts-1"] if with_text else [])


def test_reembed_keeps_or_copies_the_lexical_index_and_deleting_removes_it(tmp_path: Path) -> None:
    collection = filled(tmp_path)
    root = tmp_path / "db" / "qzhou-lexical"
    database = root / "notes" / fts5_index.FILE_NAME
    before = (database.stat().st_ino, database.stat().st_mtime_ns)
    assert collection.reembed(task="sts", batch_size=3) is collection  # in place: a staging collection
    assert (database.stat().st_ino, database.stat().st_mtime_ns) == before  # the texts did not change
    assert sorted(path.name for path in root.iterdir()) == ["notes"]  # no staging index left
    assert_in_step(collection)
    copy = collection.reembed(new_name="notes-copy")
    assert copy.lexical.folder == root / "notes-copy"
    assert_in_step(copy)
    assert found(copy, "E4711", mode="hybrid")[0] == "parts-2"
    assert QZhouCollection.delete_collection("notes-copy", path=tmp_path / "db") is True
    assert sorted(path.name for path in root.iterdir()) == ["notes"]
    assert QZhouCollection.delete_collection("notes-copy", path=tmp_path / "db") is False
    assert "notes-copy" not in {c.name for c in collection.client.list_collections()}


def test_a_process_killed_between_the_two_writes_is_repaired_on_the_next_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A child upserts (one text replaced, one id added) and is SIGKILLed after Chroma took the write and
    before its lexical index did; the next open finds the pending ids and redoes them from Chroma."""
    filled(tmp_path)
    texts = ["The cat moved to the sofa. ref01y", "A hamster runs in its wheel at night. ref10"]
    payload = {
        "spec": {"path": str(tmp_path / "db")},
        "name": "notes",
        "texts": texts,
        "ids": ["pets-1", "pets-4"],
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "upsert-then-hang", json.dumps(payload)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if line.strip() == "chroma written":
                os.kill(child.pid, signal.SIGKILL)
                break
        else:
            pytest.fail(f"the child never wrote:\n{child.stderr.read()[-4000:]}")
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        reopened = QZhouCollection.open("notes", path=tmp_path / "db")
    repaired = [record.getMessage() for record in caplog.records if "out of step" in record.getMessage()]
    assert len(repaired) == 1 and "2 re-indexed, 0 removed" in repaired[0], repaired
    assert_in_step(reopened)
    assert found(reopened, "ref01", mode="lexical") == [] and found(reopened, "ref01y", mode="lexical") == [
        "pets-1"
    ]


def test_a_failed_lexical_write_keeps_the_chroma_write_and_the_next_open_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds the FTS5 database locked: the lexical writes fail, the add does not."""
    monkeypatch.setattr(fts5_index, "BUSY_TIMEOUT_S", 0.2)
    collection = filled(tmp_path)
    blocker = sqlite3.connect(collection.lexical.folder / fts5_index.FILE_NAME, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.ERROR, logger="qzhou_plugins"):
            added = collection.add(["A late note about seal kit XK-2291. ref11"], ids=["late"])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert added.added == 1 and "late" in collection.collection.get(ids=["late"])["ids"]
    assert any("missed a write" in record.getMessage() for record in caplog.records)
    assert (tmp_path / "db" / "qzhou-lexical" / "notes.rebuild").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        reopened = QZhouCollection.open("notes", path=tmp_path / "db")
    assert any("is dropped" in record.getMessage() for record in caplog.records)
    assert reopened.lexical.index is None  # rebuilt by the first lexical query
    assert found(reopened, "ref11", mode="lexical") == ["late"]
    assert_in_step(reopened)
    assert not (tmp_path / "db" / "qzhou-lexical" / "notes.rebuild").exists()


def test_a_collection_of_an_earlier_version_gets_its_index_on_first_hybrid_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    raw = client.create_collection("older", embedding_function=QZhouEmbeddingFunction(DEMO_MODEL))
    raw.add(ids=IDS, documents=[text for _, text, _ in CORPUS])
    collection = QZhouCollection.open("older", client=client)
    assert collection.lexical.index is None and "qzhou:lexical" not in (collection.collection.metadata or {})
    assert found(collection, "XK-2291", mode="dense")  # dense use builds nothing
    assert collection.lexical.index is None
    with caplog.at_level(logging.INFO, logger="qzhou_plugins"):
        assert found(collection, "XK-2291", mode="hybrid")[0] == "parts-1"
    assert any("built the lexical index of 'older'" in record.getMessage() for record in caplog.records)
    assert not any("out of step" in record.getMessage() for record in caplog.records)  # a build, no repair
    assert_in_step(collection)
    recorded = client.get_collection("older", embedding_function=None).metadata
    assert json.loads(recorded["qzhou:lexical"]) == {"analyzer": "english", "engine": "fts5"}


# -- queries ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> QZhouCollection:
    """CORPUS plus 30 texts that all say "alpha" (topic "noise") and one that says it once ("signal")."""
    collection = filled(tmp_path_factory.mktemp("notes"))
    noise = [f"alpha alpha alpha beta number {i}. refn{i}" for i in range(30)]
    collection.add(noise, [{"topic": "noise"}] * 30, ids=[f"noise-{i}" for i in range(30)])
    collection.add(
        ["One alpha among many other words of a long text. refsig"], [{"topic": "signal"}], ids=["sig"]
    )
    return collection


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_filters_hold_in_every_mode(notes: QZhouCollection, mode: str) -> None:
    for where in ({"topic": "parts"}, {"topic": {"$in": ["pets", "parts"]}}):
        hits = notes.query("pump motor error E4711", mode=mode, n_results=5, where=where)[0].hits
        allowed = where["topic"]["$in"] if isinstance(where["topic"], dict) else [where["topic"]]
        assert hits and all(hit.metadata["topic"] in allowed for hit in hits)
    hits = notes.query("interest rates", mode=mode, where_document={"$contains": "cat"})[0].hits
    assert all("cat" in hit.document for hit in hits)
    hits = notes.query("interest rates", mode=mode, where={"topic": "pets"})[0].hits
    assert all(hit.metadata["topic"] == "pets" for hit in hits)  # the finance hits never appear
    assert all("lexical" not in hit.sources for hit in hits)  # no pets text says "interest" or "rates"


def test_a_filter_that_drops_the_best_lexical_hits_searches_deeper(notes: QZhouCollection) -> None:
    assert found(notes, "alpha", mode="lexical", n_results=1) != ["sig"]  # 30 noise texts rank first
    assert found(notes, "alpha", mode="lexical", n_results=1, where={"topic": "signal"}) == ["sig"]
    assert found(notes, "alpha", mode="hybrid", n_results=1, candidates=1, where={"topic": "signal"}) == [
        "sig"
    ]


def test_hybrid_hits_keep_each_side_and_the_one_fusion(notes: QZhouCollection) -> None:
    query = "error code E4711 on the garden pump"
    dense = notes.query(query, n_results=20)[0].hits
    lexical = notes.query(query, n_results=20, mode="lexical")[0].hits
    hybrid = notes.query(query, n_results=5, mode="hybrid", candidates=20)[0].hits
    dense_rank = {hit.id: rank for rank, hit in enumerate(dense, 1)}
    lexical_rank = {hit.id: rank for rank, hit in enumerate(lexical, 1)}
    assert hybrid[0].id == "parts-2" and hybrid[0].sources == ("dense", "lexical")
    for hit in hybrid:
        expected = sum(1 / (60 + ranks[hit.id]) for ranks in (dense_rank, lexical_rank) if hit.id in ranks)
        assert hit.score == pytest.approx(expected) and hit.fused_score == hit.score
        assert (hit.dense_score is not None) == ("dense" in hit.sources) == (hit.id in dense_rank)
        assert (hit.lexical_score is not None) == ("lexical" in hit.sources) == (hit.id in lexical_rank)
        assert (hit.distance is None) == (hit.dense_score is None)
    by_dense = notes.query(query, n_results=5, mode="hybrid", fusion="weighted", alpha=1.0, candidates=20)
    assert [hit.id for hit in by_dense[0].hits] == [hit.id for hit in dense[:5]]
    by_words = notes.query(query, n_results=3, mode="hybrid", fusion="weighted", alpha=0.0, candidates=20)
    found_by_words = [hit.id for hit in lexical[:3]]  # the hits after them are dense-only, at 0
    assert [hit.id for hit in by_words[0].hits][: len(found_by_words)] == found_by_words


def test_rerank_reorders_the_fused_list(notes: QZhouCollection) -> None:
    query = "which part fits the pump"
    fused = notes.query(query, n_results=6, mode="hybrid")[0].hits
    reranked = notes.query(query, n_results=3, mode="hybrid", rerank_candidates=6)[0].hits
    assert {hit.id for hit in reranked} <= {hit.id for hit in fused}
    assert [hit.score for hit in reranked] == sorted((hit.score for hit in reranked), reverse=True)
    by_id = {hit.id: hit for hit in fused}
    assert all(hit.fused_score == by_id[hit.id].fused_score != hit.score for hit in reranked)


@pytest.mark.parametrize(
    "syntax",
    ['"seal kit" AND XK-2291', "NEAR(seal kit, 2)", "seal* -kit", "(seal OR kit) NOT pump", "terms:seal ^kit",
     '"unclosed seal kit', "seal) kit(", "seal + kit : {kit}"],
)  # fmt: skip
def test_fts5_syntax_in_a_query_is_plain_words(notes: QZhouCollection, syntax: str) -> None:
    words = re.sub(r"[^\w-]+", " ", syntax)
    assert found(notes, syntax, mode="lexical") == found(notes, words, mode="lexical")
    assert found(notes, syntax, mode="lexical")[0] == "parts-1"
    assert found(notes, syntax, mode="hybrid")[0] == "parts-1"


def test_a_query_with_no_searchable_term_gives_the_dense_ranking(notes: QZhouCollection) -> None:
    query = "the of and !!! ... 🙂"
    assert notes.query(query, mode="lexical")[0].hits == []
    hybrid = notes.query(query, mode="hybrid", n_results=5)[0].hits
    assert [hit.id for hit in hybrid] == found(notes, query, n_results=5)
    assert all(hit.sources == ("dense",) for hit in hybrid)


# -- settings and bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [({"mode": "bm25"}, "unknown mode 'bm25'; choose one of dense, lexical, hybrid"),
     ({"mode": "hybrid", "fusion": "max"}, "unknown fusion 'max'; choose one of rrf, weighted"),
     ({"mode": "hybrid", "candidates": 0}, "candidates must be a positive integer"),
     ({"mode": "hybrid", "candidates": True}, "candidates must be a positive integer"),
     ({"mode": "hybrid", "fusion": "weighted", "alpha": 1.5}, "alpha must be from 0 to 1, not 1.5"),
     ({"mode": "hybrid", "alpha": float("nan")}, "alpha must be a finite number"),
     ({"mode": "hybrid", "rrf_k": -1}, "rrf_k must be at least 0")],
)  # fmt: skip
def test_bad_query_options_are_named(notes: QZhouCollection, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        notes.query("pump", **options)


def test_the_analyzer_is_recorded_and_another_one_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown analyzer 'klingon'; choose one of english, chinese, auto"):
        QZhouCollection.open("zh-notes", path=tmp_path, model=DEMO_MODEL, analyzer="klingon")
    with pytest.raises(ValueError, match="unknown lexical engine 'lucene'; choose one of fts5, tantivy"):
        QZhouCollection.open("zh-notes", path=tmp_path, model=DEMO_MODEL, lexical_engine="lucene")
    assert not (tmp_path / "qzhou-lexical").exists()
    chinese = QZhouCollection.open("zh-notes", path=tmp_path, model=DEMO_MODEL, analyzer="chinese")
    chinese.add(
        ["中华人民共和国成立于1949年。refzh1", "今天的天气很好，我们去公园散步。refzh2"], ids=["a", "b"]
    )
    assert found(chinese, "人民", mode="lexical") == ["a"] and found(chinese, "公园", mode="lexical") == ["b"]
    reopened = QZhouCollection.open("zh-notes", path=tmp_path)
    assert (reopened.analyzer, reopened.lexical_engine) == ("chinese", "fts5")
    with pytest.raises(
        CollectionMismatchError, match="analyzer: the collection has 'chinese', you asked for 'english'"
    ):
        QZhouCollection.open("zh-notes", path=tmp_path, analyzer="english")


def test_a_lexical_index_that_cannot_be_opened_fails_lexical_queries_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collection = filled(tmp_path)
    collection.lexical.close()
    (collection.lexical.folder / fts5_index.FILE_NAME).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="qzhou_plugins"):
        damaged = QZhouCollection.open("notes", path=tmp_path / "db")
    assert any("cannot be opened" in record.getMessage() for record in caplog.records)
    assert found(damaged, "pump")  # dense queries go on
    for mode in ("lexical", "hybrid"):
        with pytest.raises(
            LexicalUnavailableError, match=r"need its lexical index in .*notes, which cannot be"
        ):
            damaged.query("pump", mode=mode)
