"""The lexical indexes: every operation on both engines, the settings they record, query text that
looks like FTS5 syntax, queries with nothing to search, and the one BM25 both engines compute."""

from __future__ import annotations

import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import document_text, read_sts, shared_data
from qzhou_plugins.lexical import (
    LexicalHit,
    LexicalIndex,
    LexicalIndexError,
    LexicalSettings,
    LexicalSettingsError,
    analyzer,
    open_index,
    remove_index,
)

ENGINES = ["fts5", "tantivy"]

DOCUMENTS = {
    "moon": "The near side of the Moon always faces the Earth.",
    "tea": "Green tea is brewed from unoxidised leaves.",
    "kernel": "The kernel schedules processes; NOT every process runs at once.",
    "part": "Replacement part AB-1234 fits the 3.5 inch drive bay.",
    "empty": "",
}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "tantivy":
        pytest.importorskip("tantivy", reason="tantivy is the 'tantivy' extra")
    return str(request.param)


@pytest.fixture
def index(tmp_path: Path, engine: str) -> LexicalIndex:
    opened = open_index(tmp_path / "lexical", engine=engine)
    opened.add(list(DOCUMENTS), list(DOCUMENTS.values()))
    yield opened
    opened.close()


def found(index: LexicalIndex, query: str, k: int = 10) -> list[str]:
    return [hit.id for hit in index.search(query, k)]


# -- operations -------------------------------------------------------------------------------------


def test_an_index_adds_searches_counts_and_lists(index: LexicalIndex) -> None:
    assert isinstance(index, LexicalIndex)
    assert index.count() == len(DOCUMENTS)
    assert sorted(index.ids()) == sorted(DOCUMENTS)
    hits = index.search("brewing teas", 3)
    assert [hit.id for hit in hits] == ["tea"]  # stemmed: brewing ~ brewed, teas ~ tea
    assert isinstance(hits[0], LexicalHit) and hits[0].score > 0
    assert found(index, "moon earth kernel")[:1] == ["moon"]  # two terms beat one
    assert found(index, "ab-1234") == ["part"] and found(index, "3.5") == ["part"]


def test_the_k_best_come_best_first(index: LexicalIndex) -> None:
    index.add(["moon2", "moon3"], ["moon", "moon moon moon landing"])
    hits = index.search("moon", 2)
    assert len(hits) == 2 and hits[0].score >= hits[1].score
    assert {hit.id for hit in index.search("moon", 10)} == {"moon", "moon2", "moon3"}


def test_adding_an_id_again_replaces_its_text(index: LexicalIndex) -> None:
    index.add(["tea", "new"], ["Black coffee, roasted beans.", "fresh tea leaves"])
    assert index.count() == len(DOCUMENTS) + 1
    assert found(index, "coffee") == ["tea"]
    assert found(index, "unoxidised") == []
    assert found(index, "tea") == ["new"]


def test_delete_removes_ids_and_counts_those_it_held(index: LexicalIndex) -> None:
    assert index.delete(["tea", "never-added", "tea"]) == 1
    assert index.count() == len(DOCUMENTS) - 1
    assert found(index, "tea") == []
    assert "tea" not in set(index.ids())
    assert index.delete([]) == 0


def test_a_document_without_terms_is_held_but_never_found(index: LexicalIndex) -> None:
    index.add(["punctuation"], ["... !!! the of"])
    assert {"empty", "punctuation"} <= set(index.ids())
    assert "punctuation" not in found(index, "the of")


def test_an_index_persists_and_reopens_with_its_recorded_settings(tmp_path: Path, engine: str) -> None:
    folder = tmp_path / "lexical"
    with open_index(folder, engine=engine, analyzer="auto") as first:
        first.add(["a", "b"], ["alpha particles", "beta 粒子"])
        first.mark_pending(["c"])
    with open_index(folder) as again:
        assert again.settings == LexicalSettings(engine=engine, analyzer="auto")
        assert again.count() == 2 and found(again, "粒子") == ["b"]
        assert again.pending() == ["c"]


def test_reopening_with_other_settings_is_refused_and_changes_nothing(tmp_path: Path, engine: str) -> None:
    folder = tmp_path / "lexical"
    with open_index(folder, engine=engine) as built:
        built.add(["a"], ["alpha"])
    other = "tantivy" if engine == "fts5" else "fts5"
    with pytest.raises(LexicalSettingsError, match=r"analyzer: built with 'english', asked for 'chinese'"):
        open_index(folder, analyzer="chinese")
    with pytest.raises(LexicalSettingsError, match=rf"engine: built with '{engine}', asked for '{other}'"):
        open_index(folder, engine=other)
    with pytest.raises(LexicalSettingsError, match=r"k1: built with 1\.2, asked for 0\.9"):
        open_index(folder, k1=0.9)
    with open_index(folder, engine=engine, analyzer="english", k1=1.2, b=0.75) as same:
        assert same.count() == 1


def test_pending_marks_are_cleared_by_the_write_that_brings_ids_in_step(index: LexicalIndex) -> None:
    index.mark_pending(["tea", "new", "moon"])
    index.mark_pending(["tea"])
    assert sorted(index.pending()) == ["moon", "new", "tea"]
    index.add(["new"], ["new text"])
    index.delete(["moon"])
    assert index.pending() == ["tea"]


def test_two_handles_see_each_others_writes(tmp_path: Path, engine: str) -> None:
    folder = tmp_path / "lexical"
    with open_index(folder, engine=engine) as first, open_index(folder) as second:
        first.add(["a"], ["alpha beta"])
        assert found(second, "alpha") == ["a"]  # second has not searched yet
        second.add(["b"], ["alpha gamma"])
        assert sorted(found(first, "alpha")) == ["a", "b"] and first.count() == 2
        first.delete(["a"])
        assert found(second, "beta") == [] and second.count() == 1


def test_writers_of_two_handles_take_turns(tmp_path: Path, engine: str) -> None:
    """Each handle's writes wait for the other's (tantivy: its writer lock; FTS5: SQLite's)."""
    folder = tmp_path / "lexical"
    handles = [open_index(folder, engine=engine), open_index(folder)]

    def write(number: int) -> None:
        for batch in range(4):
            ids = [f"h{number}-b{batch}-{i}" for i in range(3)]
            handles[number].add(ids, [f"shared text {number}"] * 3)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write, [0, 1]))
    assert handles[0].count() == handles[1].count() == 24
    assert len(handles[1].search("shared", 100)) == 24
    for handle in handles:
        handle.close()


def test_remove_deletes_the_folder_and_a_closed_index_says_so(tmp_path: Path, engine: str) -> None:
    folder = tmp_path / "lexical"
    index = open_index(folder, engine=engine)
    index.add(["a"], ["alpha"])
    index.remove()
    assert not folder.exists()
    with pytest.raises(LexicalIndexError, match="closed"):
        index.search("alpha")
    index.close()  # harmless
    assert remove_index(folder) is False


def test_a_folder_that_is_not_an_index_is_never_used_or_removed(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LexicalIndexError, match="not a lexical index"):
        open_index(tmp_path)
    with pytest.raises(LexicalIndexError, match="not a lexical index"):
        remove_index(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(LexicalIndexError, match="is a file"):
        open_index(tmp_path / "notes.txt")
    with pytest.raises(LexicalIndexError, match="no lexical index"):
        open_index(tmp_path / "missing", create=False)


def test_bad_writes_are_refused_before_anything_is_written(index: LexicalIndex) -> None:
    with pytest.raises(ValueError, match=r"unique within one add: 'tea' repeated"):
        index.add(["x", "tea", "tea"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="2 ids and 1 texts"):
        index.add(["x", "y"], ["a"])
    with pytest.raises(TypeError, match=r"texts must be strings .* position\(s\) 1"):
        index.add(["x", "y"], ["a", None])
    with pytest.raises(TypeError, match="ids must be non-empty strings"):
        index.add(["x", ""], ["a", "b"])
    with pytest.raises(TypeError, match="not a single str"):
        index.delete("tea")
    with pytest.raises(ValueError, match="lone surrogate"):
        index.mark_pending(["\ud800"])
    assert index.count() == len(DOCUMENTS) and found(index, "tea") == ["tea"] and index.pending() == []


# -- query text --------------------------------------------------------------------------------------

FTS5_SYNTAX = [
    '"near side"',
    "NEAR(moon earth, 2)",
    "moo*",
    "-tea kernel",
    "(moon OR tea) AND NOT kernel",
    "kernel: moon",
    "terms:moon",
    "^moon + side",
    "{terms}: tea",
    "'; DROP TABLE documents; --",
    'moon" OR "1"="1',
    "AND OR NOT",
    "NEAR",
]


@pytest.mark.parametrize("query", FTS5_SYNTAX)
def test_query_syntax_is_plain_words(index: LexicalIndex, query: str) -> None:
    words = " ".join(re.findall(r"\w+", query))
    assert index.search(query) == index.search(words)
    if query == "NEAR":
        assert found(index, query) == ["moon"]  # the word itself, from "The near side"
    assert index.count() == len(DOCUMENTS)


def test_a_query_of_more_terms_than_sqlite_takes_variables(index: LexicalIndex) -> None:
    query = " ".join(f"word{n}" for n in range(40_000)) + " tea"
    assert found(index, query) == ["tea"]


@pytest.mark.parametrize("query", ["", "   ", "the of and", "!!! ... ???", "😀🎉", "\u200b", "*", '""', "()"])
def test_a_query_with_nothing_to_search_finds_nothing(index: LexicalIndex, query: str) -> None:
    assert index.search(query) == []


def test_bad_queries_are_refused_by_name(index: LexicalIndex) -> None:
    with pytest.raises(TypeError, match="must be a string, not NoneType"):
        index.search(None)  # type: ignore[arg-type]
    for k in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match=r"k \(the number of results\) must be a positive integer"):
            index.search("moon", k)  # type: ignore[arg-type]


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"engine": "lucene"}, "unknown lexical engine 'lucene'; choose one of fts5, tantivy"),
        ({"analyzer": "french"}, "unknown analyzer 'french'; choose one of english, chinese, auto"),
        ({"k1": -0.1}, "k1 must be at least 0"),
        ({"k1": math.nan}, "k1 must be a finite number"),
        ({"b": 1.5}, "b must be between 0 and 1"),
        ({"b": "0.5"}, "b must be a finite number"),
        ({"engine": "tantivy", "k1": 0.9}, "compiled into tantivy .* use engine='fts5'"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_index(tmp_path / "lexical", **options)
    assert not (tmp_path / "lexical").exists()


# -- the one BM25 ------------------------------------------------------------------------------------


def reference_bm25(corpus: dict[str, list[str]], query: list[str], k1: float, b: float) -> dict[str, float]:
    """BM25 as bm25.py writes it, computed term by term from the analyzed texts."""
    documents = len(corpus)
    mean = sum(map(len, corpus.values())) / documents
    holding = Counter(term for terms in corpus.values() for term in set(terms))
    scores: dict[str, float] = {}
    for id_, terms in corpus.items():
        counts = Counter(terms)
        score = 0.0
        for term, repeats in Counter(query).items():
            if counts[term]:
                idf = math.log(1 + (documents - holding[term] + 0.5) / (holding[term] + 0.5))
                norm = k1 * (1 - b + b * len(terms) / mean)
                score += repeats * idf * (k1 + 1) * counts[term] / (counts[term] + norm)
        if score:
            scores[id_] = score
    return scores


@pytest.fixture(scope="module")
def sentences() -> dict[str, str]:
    """Short English sentences (STS-B), under 40 terms: tantivy stores their lengths exactly."""
    rows = read_sts(shared_data("stsbenchmark") / "sts-test.tsv")
    return {f"s{i}": first for i, (first, _, _) in enumerate(rows[:600])}


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0), (0.0, 0.0)])
def test_fts5_computes_bm25_exactly_for_any_k1_and_b(
    tmp_path: Path, sentences: dict[str, str], k1: float, b: float
) -> None:
    english = analyzer("english")
    corpus = {id_: english(text) for id_, text in sentences.items()}
    with open_index(tmp_path / "lexical", k1=k1, b=b) as index:
        index.add(list(sentences), list(sentences.values()))
        for query in list(sentences.values())[:40:4]:
            expected = reference_bm25(corpus, english(query), k1, b)
            hits = index.search(query, len(sentences))
            assert {hit.id for hit in hits} == set(expected)
            for hit in hits:
                assert hit.score == pytest.approx(expected[hit.id], rel=1e-9)
            assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_the_engines_give_the_same_scores_where_tantivy_is_exact(tmp_path: Path, sentences: dict) -> None:
    """No document over 40 terms and nothing deleted: tantivy's BM25 is then the exact one, in float32."""
    pytest.importorskip("tantivy", reason="tantivy is the 'tantivy' extra")
    english = analyzer("english")
    assert max(len(english(text)) for text in sentences.values()) <= 40
    indexes = [open_index(tmp_path / engine, engine=engine) for engine in ENGINES]
    for index in indexes:
        index.add(list(sentences), list(sentences.values()))
    for query in list(sentences.values())[1:200:10]:
        exact, native = (dict(index.search(query, 50)) for index in indexes)
        common = exact.keys() & native.keys()
        assert len(common) >= 0.9 * len(exact)  # ids differ only at a tie at the cut
        for id_ in common:
            assert native[id_] == pytest.approx(exact[id_], rel=2e-5)
    for index in indexes:
        index.close()


def test_the_engines_agree_on_scifact_abstracts(
    tmp_path: Path, scifact_corpus: list, scifact_queries: list
) -> None:
    """Long documents: tantivy rounds their lengths; the top 10 stay almost the same."""
    pytest.importorskip("tantivy", reason="tantivy is the 'tantivy' extra")
    documents = scifact_corpus[:1500]
    ids, texts = [d["_id"] for d in documents], [document_text(d) for d in documents]
    indexes = [open_index(tmp_path / engine, engine=engine) for engine in ENGINES]
    for index in indexes:
        index.add(ids, texts)
    overlaps = []
    for query in scifact_queries[:100]:
        exact, native = ({hit.id for hit in index.search(query["text"], 10)} for index in indexes)
        overlaps.append(len(exact & native) / max(len(exact), 1))
    assert sum(overlaps) / len(overlaps) >= 0.9
    for index in indexes:
        index.close()
