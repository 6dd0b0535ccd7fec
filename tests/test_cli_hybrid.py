"""Hybrid search on the command line: ``index`` keeps a lexical index, ``query --mode``, ``eval retrieval
--mode``, their flags and errors, and Chinese text cut at sentence ends.

The example documents are indexed once per module with the demo model (all-MiniLM-L6-v2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.chroma import QZhouCollection
from qzhou_plugins.cli import read_chunks
from qzhou_plugins.evaluation import RETRIEVAL_DEPTH, exact_search, load_beir
from qzhou_plugins.evaluation.hybrid import fused_run, lexical_run
from qzhou_plugins.lexical import SearchOptions
from test_cli import EXAMPLES, assert_one_line_error, run

QUESTIONS = {
    "q1": ("How hot should water be for green tea?", "brewing"),
    "q2": ("Who wrote the Cha Jing?", "history"),
    "q3": ("What are theaflavins and thearubigins?", "processing"),
    "q4": ("Which teas have no caffeine?", "caffeine"),
}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qzhou_plugins.cli import main

    folder = tmp_path_factory.mktemp("cli-hybrid") / "db"
    assert main(["index", str(EXAMPLES), "-c", "tea", "--db", str(folder), "--model", DEMO_MODEL]) == 0
    return folder


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example notes as a BEIR folder: one document per file, four judged questions."""
    folder = tmp_path_factory.mktemp("tea-beir")
    notes = {path.stem: path.read_text("utf-8") for path in EXAMPLES.iterdir() if path.suffix != ".jsonl"}
    rows = [{"_id": name, "title": "", "text": text} for name, text in notes.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    queries = [{"_id": q, "text": text} for q, (text, _) in QUESTIONS.items()]
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries), "utf-8")
    judged = "".join(f"{q}\t{doc}\t1\n" for q, (_, doc) in QUESTIONS.items())
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged, "utf-8")
    return folder


def test_index_keeps_a_lexical_index_that_query_modes_use(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collection = QZhouCollection.open("tea", path=database, create=False)
    assert collection.lexical_index().count() == collection.count()
    where = ["-c", "tea", "--db", database, "-k", "3"]
    code, out, err = run(capsys, "query", "Who wrote the Cha Jing?", *where, "--mode", "lexical")
    assert code == 0, err
    assert "history.md" in out.splitlines()[0]
    code, out, err = run(capsys, "query", "Who wrote the Cha Jing?", *where, "--mode", "hybrid")
    assert code == 0, err
    first = out.splitlines()[0]
    assert "history.md" in first and "[dense " in first and ", lexical " in first
    code, out, err = run(capsys, "query", "the of and", *where, "--mode", "lexical")
    assert code == 0 and "has no chunk with a word of the query" in out
    weighted = ["--mode", "hybrid", "--fusion", "weighted", "--alpha", "0", "--candidates", "5"]
    code, out, err = run(capsys, "query", "Cha Jing", *where, *weighted)
    assert code == 0 and "history.md" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--mode", "bm25"], "argument --mode: invalid choice: 'bm25'"),
     (["--mode", "hybrid", "--alpha", "1.5"], "argument --alpha: must be from 0 to 1, not 1.5"),
     (["--mode", "hybrid", "--candidates", "0"], "argument --candidates: must be a positive integer"),
     (["--mode", "hybrid", "--rrf-k", "-1"], "argument --rrf-k: must be zero or more"),
     (["--fusion", "max"], "argument --fusion: invalid choice: 'max'")],
)  # fmt: skip
def test_bad_search_flags_are_usage_errors(
    database: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code, _, err = run(capsys, "query", "tea", "-c", "tea", "--db", database, *flags)
    assert code == 2 and message in assert_one_line_error(err)


def test_the_analyzer_is_chosen_at_index_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "zh.txt").write_text(
        "中华人民共和国成立于1949年。北京是中国的首都。\n\n今天天气很好，我们去公园散步。", "utf-8"
    )
    where = ["-c", "zh-notes", "--db", tmp_path / "db"]
    code, out, err = run(capsys, "index", notes, *where, "--model", DEMO_MODEL, "--analyzer", "chinese")
    assert code == 0, err
    assert "Lexical index (chinese analyzer, fts5, 1 chunk(s))" in out
    code, out, err = run(capsys, "query", "人民", *where, "--mode", "lexical", "-k", "1")
    assert code == 0 and "zh.txt (chunk 0)" in out
    code, _, err = run(capsys, "index", notes, *where, "--analyzer", "auto")
    assert code == 1
    assert "analyzer: the collection has 'chinese', you asked for 'auto'" in assert_one_line_error(err)


def test_chinese_text_is_cut_at_sentence_ends(tmp_path: Path) -> None:
    sentences = ["中华人民共和国成立于1949年。", "北京是中国的首都，也是政治和文化中心！",
                 "上海是最大的城市吗？", "是的；", "它也是金融中心。", "“今天天气很好。”",
                 "我们去公园散步吧。"]  # fmt: skip
    path = tmp_path / "zh.txt"
    path.write_text("".join(sentences), "utf-8")
    chunks = [chunk.text for chunk in read_chunks(path, chunk_size=40, chunk_overlap=0)]
    assert "".join(chunks) == "".join(sentences) and len(chunks) > 1
    ends = {sentence[-1] for sentence in sentences}
    assert all(chunk[-1] in ends for chunk in chunks), chunks  # never in the middle of a sentence
    english = tmp_path / "en.txt"
    english.write_text("One sentence here. Another one there! " * 20, "utf-8")
    cut = [chunk.text for chunk in read_chunks(english, chunk_size=100, chunk_overlap=0)]
    assert all(len(chunk) <= 100 for chunk in cut) and not any("。" in chunk for chunk in cut)


def test_eval_retrieval_modes(beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, printed = {}, {}
    for mode in ("dense", "lexical", "hybrid"):
        out_json = tmp_path / f"{mode}.json"
        code, out, err = run(
            capsys, "eval", "retrieval", beir, "--model", DEMO_MODEL, "--mode", mode, "--json", out_json
        )
        assert code == 0, err
        results[mode], printed[mode] = json.loads(out_json.read_text("utf-8")), out
        assert results[mode]["mode"] == mode and "ndcg_at_10" in out
    assert results["lexical"]["model"] == "none"
    assert "mode lexical: BM25 (fts5 engine, english analyzer)" in printed["lexical"]
    assert "fused with the model's ranking by rrf (k=60)" in printed["hybrid"]
    assert results["hybrid"]["fusion"] == "rrf (k=60), 100 candidates a side"
    assert results["dense"]["lexical"] is None and results["hybrid"]["model"] == DEMO_MODEL
    assert all(result["ndcg_at_10"] > 0.6 for result in results.values())


def test_eval_ranks_as_the_collection_ranks(beir: Path, tmp_path: Path) -> None:
    """The lexical and hybrid runs of the evaluation are what QZhouCollection.query returns."""
    data = load_beir(beir)
    collection = QZhouCollection.open("tea-docs", path=tmp_path, model=DEMO_MODEL)
    collection.add(list(data.corpus.values()), ids=list(data.corpus))
    lexical = lexical_run(data, RETRIEVAL_DEPTH)
    encoder = Encoder.shared(model=DEMO_MODEL)
    dense = exact_search(
        encoder.encode_queries(list(data.queries.values())),
        encoder.encode_documents(list(data.corpus.values())),
        list(data.queries),
        list(data.corpus),
    )
    hybrid = fused_run(dense, lexical, SearchOptions(mode="hybrid", candidates=5))
    size = len(data.corpus)
    for query_id, query in data.queries.items():
        by_words = collection.query(query, mode="lexical", n_results=size)[0].hits
        assert [hit.id for hit in by_words] == list(lexical[query_id])
        both = collection.query(query, mode="hybrid", n_results=5, candidates=5)[0].hits
        assert [hit.id for hit in both] == list(hybrid[query_id])[:5]
