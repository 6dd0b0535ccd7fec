"""The ``qzhou-plugins`` command end to end: index the example folder into a temporary Chroma database,
query it, index again (nothing doubles), evaluate, and fail with one-line errors and the right codes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, shared_data
from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.cli import main, read_chunks
from qzhou_plugins.cli.errors import DocumentError
from qzhou_plugins.evaluation import EvaluationDataError
from qzhou_plugins.jsonlines import JSONLinesError
from qzhou_plugins.validation import has_content

EXAMPLES = REPO / "examples" / "documents"
GREEN_TEA_QUESTION = "How hot should the water be for green tea?"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The example documents indexed once with the demo model; (database folder, first run's output)."""
    database = tmp_path_factory.mktemp("cli") / "db"
    code = main(["index", str(EXAMPLES), "--collection", "tea", "--db", str(database), "--model", DEMO_MODEL])
    assert code == 0
    return database, ""


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("index", "query", "eval", "embed", "serve", "bench"):
        assert command in out
    assert "Exit codes" in out and DEMO_MODEL in out
    for command in (
        ["index"],
        ["query"],
        ["eval"],
        ["eval", "retrieval"],
        ["eval", "sts"],
        ["eval", "rerank"],
        ["embed"],
        ["serve"],
    ):
        code, out, _ = run(capsys, *command, "--help")
        assert code == 0 and out.startswith("usage: qzhou-plugins " + " ".join(command))


def test_index_then_query_finds_the_right_note(
    indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    database, _ = indexed
    code, out, err = run(capsys, "query", GREEN_TEA_QUESTION, "-c", "tea", "--db", database, "-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("1. ") and "examples/documents/brewing.txt (chunk 0)" in lines[0]
    assert "70 to 80 degrees Celsius" in out
    ranks = [line for line in lines if line[:1].isdigit()]
    assert len(ranks) == 3
    scores = [float(line.split()[1]) for line in ranks]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1


def test_query_with_rerank(indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    database, _ = indexed
    code, out, err = run(
        capsys, "query", "Who wrote the first book about tea?", "-c", "tea", "--db", database,
        "-k", "2", "--rerank", "10",
    )  # fmt: skip
    assert code == 0, err
    ranks = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(ranks) == 2
    assert "history.md" in ranks[0]


def test_index_again_adds_nothing(indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    from qzhou_plugins.chroma import QZhouCollection

    database, _ = indexed
    before = QZhouCollection.open("tea", path=database, create=False).count()
    # The same folder given another way (a relative path, one file twice) must not double anything.
    relative = EXAMPLES.relative_to(REPO)
    code, out, err = run(
        capsys, "index", EXAMPLES, relative / "brewing.txt", "-c", "tea", "--db", database
    )  # no --model: the collection's recorded model is used
    assert code == 0, err
    assert "added 0, replaced 0, removed 0, unchanged 8, skipped 0 file(s)" in out
    assert "; 0 chunk(s) added, 0 removed" in out
    assert f"the collection holds {before}." in out
    assert QZhouCollection.open("tea", path=database, create=False).count() == before


def test_jsonl_fields_become_metadata(indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    from qzhou_plugins.chroma import QZhouCollection

    database, _ = indexed
    collection = QZhouCollection.open("tea", path=database, create=False)
    found = collection.collection.get(where={"term": "gaiwan"}, include=["metadatas", "documents"])
    assert len(found["ids"]) == 1
    metadata = found["metadatas"][0]
    assert metadata["source"].endswith("examples/documents/glossary.jsonl")
    assert (metadata["line"], metadata["chunk"], metadata["category"]) == (1, 0, "equipment")
    assert found["documents"][0].startswith("A gaiwan is a Chinese lidded bowl")
    code, out, _ = run(capsys, "query", "What is a gaiwan?", "-c", "tea", "--db", database, "-k", "1")
    assert code == 0 and "glossary.jsonl:1 (chunk 0)" in out


def test_long_files_are_split_into_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qzhou_plugins.chroma import QZhouCollection

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "long.md").write_text(
        "\n\n".join(f"## Part {i}\n\n" + f"Sentence {i} about tea. " * 30 for i in range(6)), "utf-8"
    )
    (notes / ".hidden.txt").write_text("never indexed", "utf-8")
    (notes / "ignored.csv").write_text("a,b", "utf-8")
    (notes / "records.jsonl").write_text(
        json.dumps({"text": "Tea and more tea.", "source": "mine"}) + "\n", "utf-8"
    )
    database = tmp_path / "db"
    code, _out, err = run(
        capsys, "index", notes, "-c", "long", "--db", database, "--model", DEMO_MODEL, "--chunk-size", "400",
        "--chunk-overlap", "0",
    )  # fmt: skip
    assert code == 0, err
    collection = QZhouCollection.open("long", path=database, create=False)
    stored = collection.collection.get(include=["metadatas", "documents"])
    by_source: dict[str, list[dict]] = {}
    for metadata, document in zip(stored["metadatas"], stored["documents"], strict=True):
        by_source.setdefault(Path(metadata["source"]).name, []).append(metadata)
        assert len(document) <= 400
    assert set(by_source) == {"long.md", "records.jsonl"}
    assert sorted(m["chunk"] for m in by_source["long.md"]) == list(range(len(by_source["long.md"])))
    assert len(by_source["long.md"]) >= 6
    assert by_source["records.jsonl"][0]["record_source"] == "mine"  # the user's field is kept


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["index", "{tmp}/absent", "-c", "x", "--db", "{tmp}/db"], 2, "no such file or folder"),
        (["index", "{tmp}/sheet.xlsx", "-c", "x", "--db", "{tmp}/db"], 2, "unsupported file type"),
        (["index", "{tmp}/empty-folder", "-c", "x", "--db", "{tmp}/db"], 2, "no .txt, .md, .jsonl, .pdf"),
        (
            ["index", "{tmp}/bad.jsonl", "-c", "x", "--db", "{tmp}/db"],
            1,
            "bad.jsonl:2: the 'text' field is missing",
        ),
        (["index", "{tmp}/latin1.txt", "-c", "x", "--db", "{tmp}/db"], 1, "latin1.txt is not UTF-8 text"),
        (
            ["index", "{examples}", "--db", "{tmp}/db"],
            2,
            "the following arguments are required: --collection",
        ),
        (
            ["index", "{examples}", "-c", "x", "--db", "{tmp}/db", "--host", "h"],
            2,
            "not allowed with argument",
        ),
        (["index", "{examples}", "-c", "x", "--chunk-overlap", "2000"], 2, "--chunk-overlap"),
        (["query", "tea", "-c", "nope", "--db", "{tmp}/absent-db"], 1, "no Chroma database at"),
        (["query", "tea", "-c", "tea", "--port", "8001"], 2, "--port needs --host"),
        (["load", "{tmp}/absent", "-c", "tea", "--port", "8001"], 2, "--port needs --host"),
        (
            ["load", "{tmp}/absent", "-c", "x", "--db", "{tmp}/db", "--host", "h"],
            2,
            "not allowed with argument",
        ),
        (["query", "tea", "-c", "tea", "--db", "{tmp}/db", "-k", "0"], 2, "-k must be at least 1"),
        (["query", " ", "-c", "tea", "--db", "{tmp}/db"], 2, "the query text is empty"),
        (["query", "\u200b\ufeff", "-c", "tea", "--db", "{tmp}/db"], 2, "the query text is empty"),
        (["query", "tea", "-c", "tea", "--db", "{tmp}/db", "-k", "5", "--rerank", "2"], 2, "--rerank 2"),
        (["query", "tea", "-c", "tea", "--db", "{tmp}/db", "-k", "many"], 2, "invalid int value"),
        (["eval", "retrieval", "{tmp}/absent"], 2, "no such folder"),
        (["eval", "sts", "{tmp}/bad.tsv", "--model", DEMO_MODEL], 1, "bad.tsv:2: expected 3 tab-separated"),
        (["eval", "sts", "{tmp}/bad.tsv", "--task", "STSBenchmarx"], 2, "Close matches: STSBenchmark"),
        (["eval", "sts", "{tmp}/bad.tsv", "--json", "{tmp}/no/such/dir/out.json"], 2, "does not exist"),
        (["eval", "sts", "{tmp}/good.tsv", "--model", "./no/such/model"], 1, "does not exist"),
        (
            ["eval", "sts", "{tmp}/good.tsv", "--max-length", "0"],
            2,
            "argument --max-length: must be a positive integer, not 0",
        ),
        (
            ["eval", "retrieval", "{tmp}/empty-folder", "--batch-tokens", "-5"],
            2,
            "argument --batch-tokens: must be a positive integer, not -5",
        ),
        (["eval", "rerank", "{tmp}/bad.jsonl", "--max-length", "x"], 2, "--max-length: invalid int value"),
        (
            ["index", "{examples}", "-c", "x", "--db", "{tmp}/db", "--max-length", "0"],
            2,
            "argument --max-length: must be a positive integer, not 0",
        ),
        (
            ["query", "tea", "-c", "tea", "--db", "{tmp}/db", "--max-length", "-1"],
            2,
            "argument --max-length: must be a positive integer, not -1",
        ),
        (["index", "{tmp}/fifo.txt", "-c", "x", "--db", "{tmp}/db"], 2, "fifo.txt: not a regular file"),
        # a --db that is a file: our words, not Chroma's 'File exists (os error 17)'
        (
            ["index", "{examples}", "-c", "x", "--db", "{tmp}/good.tsv"],
            2,
            "error: --db must be a folder (an embedded Chroma database is one, created if missing), "
            "and '{tmp}/good.tsv' is a file; give another --db",
        ),
        (["query", "tea", "-c", "x", "--db", "{tmp}/good.tsv/db"], 2, "'{tmp}/good.tsv', on the way to"),
        (["load", "{tmp}/absent", "-c", "x", "--db", "{tmp}/good.tsv"], 2, "--db must be a folder"),
        (
            ["query", "tea \udcff", "-c", "tea", "--db", "{tmp}/db"],
            2,
            "error: the query text must be valid Unicode: it holds a lone surrogate '\\udcff' at character 4 "
            "(it stands for the byte 0xff, which is not UTF-8",
        ),
        (["eval", "nonsense", "x"], 2, "invalid choice: 'nonsense'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_errors_are_one_line_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n', "utf-8")
    (tmp_path / "latin1.txt").write_bytes("thé vert".encode("latin-1"))
    (tmp_path / "bad.tsv").write_text("a\tb\t1\nonly two\tcolumns\n", "utf-8")
    (tmp_path / "good.tsv").write_text("a\tb\t1\nc\td\t2\n", "utf-8")
    (tmp_path / "db").mkdir()
    os.mkfifo(tmp_path / "fifo.txt")  # exists, but is neither a file nor a folder
    filled = [arg.format(tmp=tmp_path, examples=EXAMPLES) for arg in argv]
    got, _out, err = run(capsys, *filled)
    assert got == code, err
    assert message.replace("{tmp}", str(tmp_path)) in assert_one_line_error(err)
    assert (tmp_path / "good.tsv").read_text("utf-8") == "a\tb\t1\nc\td\t2\n"  # a --db file is left as it was
    assert not (tmp_path / "absent-db").exists()  # a query never creates a database


# -- documents that cannot be indexed as they are --------------------------------------------------------

GOOD_LINE = json.dumps({"text": "Green tea is brewed at 70 to 80 degrees.", "category": "brewing"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"text": "tea", "score": NaN}',
            "docs.jsonl:2: field 'score' is NaN, not a number Chroma can store",
        ),
        ('{"text": "tea", "score": -Infinity}', "docs.jsonl:2: field 'score' is -Infinity"),
        ('{"text": "tea", "tags": [1, NaN]}', "docs.jsonl:2: field 'tags' holds NaN or Infinity"),
        (
            '{"text": "tea", "id": 18446744073709551616}',
            "docs.jsonl:2: field 'id' is 18446744073709551616, beyond the 64-bit integers",
        ),
        ('{"text": "tea", "id": -9223372036854775809}', "field 'id' is -9223372036854775809, beyond"),
        ('{"text": "tea", "": "v"}', "docs.jsonl:2: a field has an empty name"),
        ('{"text": "\\u200b\\u0000 "}', "docs.jsonl:2: the 'text' field is missing or has no visible text"),
        ('{"text": "tea \\ud800"}', "docs.jsonl:2: the 'text' field holds a lone surrogate"),
        ('{"text": "tea", "by": "\\udfff"}', "docs.jsonl:2: field 'by' holds a lone surrogate"),
        ('{"text": "tea" "x"}', "docs.jsonl:2: not valid JSON"),
        ('{"text": "tea", "$g": 1}', "docs.jsonl:2: metadata has the key '$g': Chroma reserves"),
        (
            '{"text": "tea", "source": "a", "record_source": "b"}',
            "docs.jsonl:2: fields 'source' and 'record_source' would both be stored as 'record_source'",
        ),
    ],
)
def test_bad_jsonl_documents_are_refused_by_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    """JSON NaN parses in Python and Chroma stores it as nothing: refused before anything is written."""
    (tmp_path / "docs.jsonl").write_text(GOOD_LINE + "\n" + line + "\n", "utf-8")
    code, _, err = run(capsys, "index", tmp_path / "docs.jsonl", "-c", "docs", "--db", tmp_path / "db")
    assert code == 1, err
    assert message in assert_one_line_error(err)
    assert not (tmp_path / "db").exists()  # failed while reading: no database was opened


def test_jsonl_document_errors_are_not_evaluation_errors(tmp_path: Path) -> None:
    (tmp_path / "docs.jsonl").write_text("{oops\n", "utf-8")
    with pytest.raises(JSONLinesError, match=r"docs\.jsonl:1: not valid JSON") as raised:
        main(["--debug", "index", str(tmp_path / "docs.jsonl"), "-c", "docs", "--db", str(tmp_path / "db")])
    assert not isinstance(raised.value, EvaluationDataError)


def test_big_ints_within_64_bits_and_nested_values_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    record = {
        "text": "Tea\u2028time",
        "id": 2**63 - 1,
        "low": -(2**63),
        "tags": ["a", 1.5],
        "chroma:document": "x",
    }
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", "utf-8")  # a raw U+2028 inside a string
    (chunk,) = read_chunks(path, 1000, 100)
    assert chunk.text == "Tea\u2028time"  # a line separator inside JSON text does not end the record
    assert (chunk.metadata["id"], chunk.metadata["low"]) == (2**63 - 1, -(2**63))
    assert chunk.metadata["tags"] == '["a", 1.5]'
    assert chunk.metadata["record_chroma:document"] == "x"  # Chroma reserves the chroma: prefix


def test_invisible_chunks_are_never_kept(tmp_path: Path) -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    text = (
        "Green tea is brewed at seventy degrees.\n\n" + "\u200b" * 50 + "\n\nBlack tea needs boiling water."
    )
    pieces = RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=0).split_text(text)
    assert any(not has_content(piece) for piece in pieces)  # the splitter does produce one
    (tmp_path / "notes.md").write_text(text, "utf-8")
    chunks = read_chunks(tmp_path / "notes.md", 60, 0)
    assert [chunk.text for chunk in chunks] == [p for p in pieces if has_content(p)]
    assert [chunk.metadata["chunk"] for chunk in chunks] == [0, 2]  # numbers keep the splitter's order


def test_a_read_error_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError (an I/O error here: root can read anything) says which document it came from."""
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(DocumentError, match=r"folder\.txt: cannot be read \(Is a directory\)"):
        read_chunks(tmp_path / "folder.txt", 100, 0)
    memory = Path("/proc/self/mem")
    if not memory.exists():
        pytest.skip("/proc/self/mem (a file whose read fails with EIO) is Linux only")
    (tmp_path / "mem.txt").symlink_to(memory)
    code, _, err = run(capsys, "index", tmp_path / "mem.txt", "-c", "docs", "--db", tmp_path / "db")
    assert code == 1
    assert f"{tmp_path / 'mem.txt'}: cannot be read (Input/output error)" in assert_one_line_error(err)


def test_an_io_error_on_one_document_names_it_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO while reading one file of a folder: as any file that cannot be read (a file that is not
    UTF-8 too), the command stops before the model is loaded, naming that file (exit code 1)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Green tea is brewed at 70 to 80 degrees.", "utf-8")
    (folder / "b.txt").write_text("Black tea takes boiling water.", "utf-8")
    bad = folder / "b.txt"
    read_bytes = Path.read_bytes

    def failing_read(self: Path) -> bytes:
        if self == bad:
            raise OSError(errno.EIO, "Input/output error")  # as a failing disk gives it: no file name
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    code, out, err = run(capsys, "index", folder, "-c", "docs", "--db", tmp_path / "db")
    assert (code, out) == (1, "")
    assert assert_one_line_error(err) == f"error: {bad}: cannot be read (Input/output error)"
    assert not (tmp_path / "db").exists()


def test_an_io_error_while_finding_the_documents_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO on a file's entry while the folder is walked: the same words and exit code as when reading."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Green tea.", "utf-8")
    (folder / "b.txt").write_text("Black tea.", "utf-8")
    bad = folder / "b.txt"
    stat = Path.stat

    def failing_stat(self: Path, **options: object) -> os.stat_result:
        if self == bad:
            raise OSError(errno.EIO, "Input/output error", str(self))
        return stat(self, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", failing_stat)
    code, _, err = run(capsys, "index", folder, "-c", "docs", "--db", tmp_path / "db")
    assert code == 1
    assert assert_one_line_error(err) == f"error: {bad}: cannot be read (Input/output error)"
    assert not (tmp_path / "db").exists()


def test_a_query_argument_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    """A byte that is not UTF-8 on the command line reaches Python as a lone surrogate (surrogateescape):
    refused in the words of the Python API before any model is loaded, not by the tokenizer."""
    script = Path(sys.executable).parent / "qzhou-plugins"
    done = subprocess.run(
        [os.fsencode(script), b"query", b"tea \xff", b"-c", b"tea", b"--db", os.fsencode(tmp_path)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    err = done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 2, err
    assert err.strip() == (
        "error: the query text must be valid Unicode: it holds a lone surrogate '\\udcff' at character 4 (it "
        "stands for the byte 0xff, which is not UTF-8: Python keeps such a byte of a command-line argument "
        "or a file name so); decode the source with errors='replace' or fix it"
    )


def test_only_binary_files_is_a_failure_that_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "zeros.txt").write_bytes(b"\0" * 3000)
    (tmp_path / "utf16.md").write_text("tea", "utf-16")
    code, out, err = run(capsys, "index", tmp_path, "-c", "docs", "--db", tmp_path / "db")
    assert code == 1 and not out
    warnings, error = err.splitlines()[:-1], err.splitlines()[-1]
    assert [line.split(": ")[1] for line in warnings] == [
        str(tmp_path / "utf16.md"),
        str(tmp_path / "zeros.txt"),
    ]
    assert all("skipped, a binary file (it holds NUL bytes" in line for line in warnings)
    assert error == "error: nothing to index: the 2 file(s) hold no text (2 binary, skipped)"
    assert not (tmp_path / "db").exists()


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as users have them: a note, a binary file, a file of invisible characters."""
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "notes").mkdir()
    (folder / "notes" / "tea.md").write_text(
        "Green tea is brewed at seventy degrees.\n\n" + "\u200b" * 50 + "\n\nBlack tea needs boiling water.",
        "utf-8",
    )
    (folder / "notes" / "blob.txt").write_bytes(b"PK\x03\x04\0\0" + bytes(range(256)))
    (folder / "notes" / "invisible.txt").write_text("\ufeff\u200b\u200c\n\u2060", "utf-8")
    return folder


def test_index_skips_binary_files_and_invisible_chunks_into_the_default_database(
    mixed_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qzhou_plugins.chroma import DEFAULT_PATH, QZhouCollection

    monkeypatch.chdir(mixed_folder)  # no --db: the database is Chroma's default path, here
    code, out, err = run(
        capsys, "index", "notes", "-c", "mixed", "--model", DEMO_MODEL, "--chunk-size", "60",
        "--chunk-overlap", "0", "--max-length", "128",
    )  # fmt: skip
    assert code == 0, err
    assert "warning: notes/blob.txt: skipped, a binary file" in err
    assert f"(database {DEFAULT_PATH}): added 2, replaced 0, removed 0, unchanged 0, skipped 1 file(s)" in out
    assert "; 2 chunk(s) added, 0 removed" in out and "1 file(s) had no text." in out
    assert (mixed_folder / DEFAULT_PATH).is_dir()
    collection = QZhouCollection.open("mixed", path=mixed_folder / DEFAULT_PATH, create=False)
    stored = collection.collection.get(include=["documents", "metadatas"])
    assert sorted(stored["documents"]) == [
        "Black tea needs boiling water.",
        "Green tea is brewed at seventy degrees.",
    ]
    assert {m["source"] for m in stored["metadatas"]} == {"notes/tea.md"}
    # --max-length was recorded for the new collection, and is what reopening it uses.
    assert collection.embedding_function.get_config()["max_length"] == 128
    assert collection.encoder.max_length == 128


def test_index_max_length_must_agree_with_an_existing_collection(
    indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from qzhou_plugins.chroma import QZhouCollection

    database, _ = indexed
    recorded = QZhouCollection.open("tea", path=database, create=False).encoder.max_length
    code, _, err = run(capsys, "index", EXAMPLES, "-c", "tea", "--db", database, "--max-length", recorded + 1)
    assert code == 1
    line = assert_one_line_error(err)
    assert f"embeds its chunks with max_length {recorded}" in line and f"--max-length {recorded + 1}" in line
    code, out, err = run(capsys, "index", EXAMPLES, "-c", "tea", "--db", database, "--max-length", recorded)
    assert code == 0, err
    assert "0 chunk(s) added" in out


def test_max_length_follows_the_truncation_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The truncation warning says "raise max_length": --max-length is how, for index and query."""
    long_note = tmp_path / "long.txt"
    long_note.write_text(" ".join(f"Tea note {i} on leaves and water." for i in range(60)), "utf-8")
    database = tmp_path / "db"
    common = [
        "-c",
        "long",
        "--db",
        database,
        "--chunk-size",
        "3000",
        "--chunk-overlap",
        "0",
        "--model",
        DEMO_MODEL,
    ]
    code, _, err = run(capsys, "index", long_note, *common)
    assert code == 0, err
    assert "truncated to 256 tokens" in caplog.text and "raise max_length" in caplog.text
    caplog.clear()
    code, _, err = run(
        capsys, "index", long_note, *common[:2], "--db", tmp_path / "db2", *common[4:], "--max-length", 512
    )
    assert code == 0, err
    assert "truncated" not in caplog.text
    question = " ".join(["Which tea notes talk about leaves and water?"] * 40)
    code, _, err = run(capsys, "query", question, "-c", "long", "--db", database, "-k", "1")
    assert code == 0, err
    assert "truncated to 256 tokens" in caplog.text  # the collection's length applies to the question
    caplog.clear()
    code, out, err = run(
        capsys, "query", question, "-c", "long", "--db", database, "-k", "1", "--max-length", 512
    )
    assert code == 0, err
    assert "truncated" not in caplog.text and out.startswith("1. ")
    code, _, err = run(capsys, "query", "tea", "-c", "long", "--db", database, "--max-length", 100_000)
    assert code == 1
    assert "max_length=100000 exceeds" in assert_one_line_error(err)


def test_unknown_collection_and_other_model_are_refused(
    indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    database, _ = indexed
    code, _, err = run(capsys, "query", "tea", "-c", "coffee", "--db", database)
    assert code == 1
    line = assert_one_line_error(err)
    assert "no collection named 'coffee'" in line and "qzhou-plugins index PATH --collection coffee" in line
    code, _, err = run(
        capsys, "index", EXAMPLES, "-c", "tea", "--db", database, "--model", "some-org/other-model"
    )
    assert code == 1
    assert "another embedding setup" in assert_one_line_error(err)


def test_debug_shows_the_traceback(indexed: tuple[Path, str]) -> None:
    database, _ = indexed
    with pytest.raises(ValueError, match="no collection named 'coffee'"):
        main(["--debug", "query", "tea", "-c", "coffee", "--db", str(database)])
    with pytest.raises(ValueError, match="no collection named 'coffee'"):
        main(["query", "tea", "-c", "coffee", "--db", str(database), "--debug"])


def test_the_installed_command_exits_with_the_codes(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "qzhou-plugins"
    assert script.is_file(), "the console script is declared in pyproject.toml ([project.scripts])"
    # -X importtime lists every module imported on stderr: building the whole parser (as --help and
    # --version do) must import neither Chroma nor the text splitter.
    done = subprocess.run(
        [script, "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert done.returncode == 0 and done.stdout.startswith("qzhou-plugins ")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "qzhou_plugins.cli.parser" in imported  # the listing is real
    assert not {"chromadb", "langchain_text_splitters", "pytrec_eval", "pyarrow", "ray", "fastapi"} & imported
    done = subprocess.run(
        [script, "index", tmp_path / "absent", "-c", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'absent'}: no such file or folder"
    assert not (tmp_path / "chroma").exists()


def test_bench_runs_the_benchmark_script_with_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_encode.py").write_text(
        "import json, sys\nopen('args.json', 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(3)\n", "utf-8"
    )
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "bench", "--", "--texts", "10", "--help")
    assert code == 3  # the benchmark's own exit code
    assert json.loads((tmp_path / "args.json").read_text("utf-8")) == ["--texts", "10", "--help"]


def test_eval_sts_reproduces_the_leaderboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """all-MiniLM-L6-v2 on STS-B test: MTEB's leaderboard reports Spearman 82.03."""
    path = shared_data("stsbenchmark") / "sts-test.tsv"
    out_json = tmp_path / "sts.json"
    code, out, err = run(capsys, "eval", "sts", path, "--model", DEMO_MODEL, "--json", out_json)
    assert code == 0, err
    printed = {
        line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.startswith("spearman")
    }
    assert printed["spearman"] == pytest.approx(0.8203, abs=0.003)
    result = json.loads(out_json.read_text("utf-8"))
    assert result["spearman"] == pytest.approx(printed["spearman"], abs=1e-5)
    assert result["main_score"] == result["spearman"]
    assert (result["evaluation"], result["pairs"], result["model"]) == ("sts", 1379, DEMO_MODEL)


def test_eval_retrieval_and_rerank_on_small_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beir = tmp_path / "tea-beir"
    beir.mkdir()
    notes = {
        path.stem: path.read_text("utf-8") for path in EXAMPLES.glob("*.[mt][dx]*") if path.suffix != ".jsonl"
    }
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": name, "title": "", "text": text}) + "\n" for name, text in notes.items()),
        "utf-8",
    )
    questions = {"q1": ("How hot should water be for green tea?", "brewing"),
                 "q2": ("How is matcha prepared?", "matcha-and-ceremony"),
                 "q3": ("How much caffeine is in a cup of tea?", "caffeine")}  # fmt: skip
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": text}) + "\n" for q, (text, _) in questions.items()), "utf-8"
    )
    (beir / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{doc}\t1\n" for q, (_, doc) in questions.items()),
        "utf-8",
    )
    code, out, err = run(
        capsys, "eval", "retrieval", beir, "--model", DEMO_MODEL, "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text("utf-8"))
    assert {"ndcg_at_10", "recall_at_100", "mrr_at_10", "map_at_1000", "main_score"} <= set(result)
    assert result["queries"] == 3 and result["documents"] == len(notes)
    assert result["ndcg_at_10"] > 0.8  # three easy questions over eight short notes
    assert "ndcg_at_10" in out and "(main score)" in out

    rerank = tmp_path / "tea-rerank.jsonl"
    rerank.write_text(
        json.dumps({"query": "water temperature for green tea", "positive": [notes["brewing"]],
                    "negative": [notes["history"], notes["storage"]]}) + "\n", "utf-8"
    )  # fmt: skip
    code, out, err = run(
        capsys, "eval", "rerank", rerank, "--model", DEMO_MODEL, "--json", tmp_path / "k.json"
    )
    assert code == 0, err
    result = json.loads((tmp_path / "k.json").read_text("utf-8"))
    assert {"map", "mrr_at_10", "main_score"} <= set(result) and result["main_score"] == result["map"]
    assert result["dataset"] == "tea-rerank" and result["candidates"] == 3
