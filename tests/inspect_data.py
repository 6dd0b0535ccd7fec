"""What the inspector's tests look at: the example notes indexed, a collection whose model is gone, and
evaluation files of the notes as a BEIR folder (shared by test_inspect_api.py and test_inspect_browser.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import session_folder
from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.cli import main
from test_cli import EXAMPLES
from test_cli_hybrid import QUESTIONS

TEA = "tea"
BROKEN = "broken"
"""A collection whose recorded model folder was deleted after indexing: its queries cannot load it."""


def notes(factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A folder built once per test run (both modules, any worker): ``db`` (:func:`build_database`) and
    the files of :func:`evaluation_files`."""

    def build(folder: Path) -> None:
        build_database(folder, minilm_path)
        evaluation_files(folder)

    return session_folder(factory, "inspect-notes", build)


def build_database(folder: Path, minilm_path: str) -> Path:
    """The example notes in collection ``tea`` (the demo model), and ``broken``; returns the database."""
    database = folder / "db"
    assert main(["index", str(EXAMPLES), "-c", TEA, "--db", str(database), "--model", DEMO_MODEL]) == 0
    gone = folder / "model-that-was-deleted"
    gone.mkdir()
    for item in Path(minilm_path).iterdir():  # links, not a copy: the folder is deleted right after
        (gone / item.name).symlink_to(item)
    note = str(EXAMPLES / "storage.txt")
    assert main(["index", note, "-c", BROKEN, "--db", str(database), "--model", str(gone)]) == 0
    shutil.rmtree(gone)
    return database


def tea_beir(folder: Path) -> Path:
    """The example notes as a BEIR folder: one document per note, the judged questions of test_cli_hybrid."""
    folder.mkdir(parents=True, exist_ok=True)
    notes = {path.stem: path.read_text("utf-8") for path in EXAMPLES.iterdir() if path.suffix != ".jsonl"}
    rows = [{"_id": name, "title": "", "text": text} for name, text in notes.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    queries = [{"_id": q, "text": text} for q, (text, _) in QUESTIONS.items()]
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries), "utf-8")
    judged = "".join(f"{q}\t{doc}\t1\n" for q, (_, doc) in QUESTIONS.items())
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged, "utf-8")
    return folder


def evaluation_paths(folder: Path) -> list[Path]:
    """Where :func:`evaluation_files` writes: lexical, and dense reranked by the demo model."""
    return [folder / "lexical.json", folder / "dense-reranked.json"]


def evaluation_files(folder: Path) -> list[Path]:
    """``eval retrieval --json`` of the notes: lexical, and dense reranked by the demo model."""
    beir = tea_beir(folder / "tea-beir")
    lexical, dense = evaluation_paths(folder)
    assert main(["eval", "retrieval", str(beir), "--mode", "lexical", "--json", str(lexical)]) == 0
    assert main(["eval", "retrieval", str(beir), "--model", DEMO_MODEL, "--rerank-model", DEMO_MODEL,
                 "--json", str(dense)]) == 0  # fmt: skip
    return [lexical, dense]
