"""``index`` as a sync: a collection ends up exactly as a fresh index of the same files would be.

In-process tests use the session's MiniLM encoder; real processes only where processes are the point:
a sync killed with SIGKILL at its write steps, a second sync while one runs, and ``index --watch``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.cli import main

pytest.importorskip("chromadb")

from qzhou_plugins.chroma import QZhouCollection

BREWING = "Green tea is brewed at 70 to 80 degrees Celsius.\n\nBlack tea takes water just off the boil."
NOTES = {
    "brewing.txt": BREWING,
    "history.md": "# History\n\nLu Yu wrote the Cha Jing, the first book about tea, in the Tang dynasty.",
    "storage.txt": "Keep tea in an airtight, opaque container away from light, heat and smells.",
    "sub/matcha.md": "Matcha is whisked green tea powder, made from shaded leaves.",
}


def write_notes(folder: Path, notes: dict[str, str] = NOTES) -> Path:
    for name, text in notes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, "utf-8")
    return folder


def state(collection: QZhouCollection) -> tuple[list[tuple[str, str, dict[str, Any]]], list[str]]:
    """What a collection holds: its (id, text, metadata) records and its lexical index's ids."""
    found = collection.collection.get(include=["documents", "metadatas"])
    records = sorted(zip(found["ids"], found["documents"], found["metadatas"], strict=True))
    return records, sorted(collection.lexical_index().ids())


def fresh_state(tmp_path: Path, *paths: Path, **settings: int) -> Any:
    """The state of a fresh index of ``paths`` (a new database)."""
    database = tmp_path / f"fresh-{time.monotonic_ns()}"
    collection = QZhouCollection.open("fresh", path=database, model=DEMO_MODEL)
    collection.sync(list(paths), **settings)
    return state(collection)


def edit_and_delete(folder: Path) -> None:
    """The issue's user: an edit, a deletion, and a new note."""
    (folder / "brewing.txt").write_text(BREWING.replace("70 to 80", "75 to 85"), "utf-8")
    (folder / "history.md").unlink()
    (folder / "caffeine.txt").write_text("A cup of black tea holds about 40 mg of caffeine.", "utf-8")


def test_a_sync_carries_every_edit_and_deletion(tmp_path: Path, minilm: Encoder) -> None:
    notes = write_notes(tmp_path / "notes")
    collection = QZhouCollection.open("notes", path=tmp_path / "db", model=DEMO_MODEL)
    first = collection.sync(notes)
    assert (len(first.added), first.chunks_added) == (4, 4)
    assert collection.sync(notes).unchanged == first.added  # nothing read, embedded or written again

    edit_and_delete(notes)
    dry = collection.sync(notes, dry_run=True)
    before = state(collection)
    assert dry.dry_run and "would have added 1, replaced 1, removed 1, unchanged 2" in dry.line()
    assert state(collection) == before  # a dry run writes nothing

    summary = collection.sync(notes)
    assert (len(summary.added), len(summary.replaced), len(summary.removed), len(summary.unchanged)) == (
        1,
        1,
        1,
        2,
    )
    assert summary.removed[0].endswith("history.md")
    assert state(collection) == fresh_state(tmp_path, notes)
    hits = collection.query("temperature for green tea", n_results=1)[0].hits
    assert "75 to 85" in hits[0].document  # the old text is gone, not merely outranked


def test_unchanged_text_keeps_its_vector_and_a_no_op_loads_no_model(tmp_path: Path, minilm: Encoder) -> None:
    notes = write_notes(tmp_path / "notes")
    QZhouCollection.open("notes", path=tmp_path / "db", model=DEMO_MODEL).sync(
        notes, chunk_size=60, chunk_overlap=0
    )
    reopened = QZhouCollection.open("notes", path=tmp_path / "db")  # as index opens it: the model it records
    assert reopened.sync(notes, chunk_size=60, chunk_overlap=0).unchanged
    assert reopened.embedding_function._encoder is None  # the model was never asked for

    # A new first paragraph shifts every chunk number (so every id): the old texts keep their vectors.
    (notes / "brewing.txt").write_text("A few notes on tea, gathered over the years.\n\n" + BREWING, "utf-8")
    summary = reopened.sync(notes, chunk_size=60, chunk_overlap=0)
    assert summary.replaced and summary.chunks_reused == 2 and summary.chunks_added == 3
    assert state(reopened) == fresh_state(tmp_path, notes, chunk_size=60, chunk_overlap=0)


def test_new_chunk_settings_rechunk_every_file(tmp_path: Path, minilm: Encoder) -> None:
    notes = write_notes(tmp_path / "notes")
    collection = QZhouCollection.open("notes", path=tmp_path / "db", model=DEMO_MODEL)
    collection.sync(notes)
    summary = collection.sync(notes, chunk_size=40, chunk_overlap=5)
    assert len(summary.replaced) == 4
    assert state(collection) == fresh_state(tmp_path, notes, chunk_size=40, chunk_overlap=5)


def test_removal_is_scoped_to_the_folder_synced(tmp_path: Path, minilm: Encoder) -> None:
    notes, other = write_notes(tmp_path / "notes"), write_notes(tmp_path / "other")
    collection = QZhouCollection.open("notes", path=tmp_path / "db", model=DEMO_MODEL)
    collection.sync([notes, other])
    (other / "storage.txt").unlink()
    (notes / "storage.txt").unlink()
    kept = collection.sync(notes, keep_missing=True)
    assert not kept.removed and kept.unchanged
    assert collection.sync(notes).removed == (str((notes / "storage.txt").resolve()),)
    # The other folder's vanished file is that folder's business: all its chunks are still there.
    write_notes(other, {"storage.txt": NOTES["storage.txt"]})
    assert state(collection) == fresh_state(tmp_path, notes, other)


def child_environment(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def index_command(folder: Path, database: Path, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qzhou_plugins.cli",
        "index",
        str(folder),
        "-c",
        "notes",
        "--db",
        str(database),
        *more,
    ]


def wait_for_line(process: subprocess.Popen[str], wanted: str, timeout: float = 120) -> list[str]:
    """Lines of the process's output up to one holding ``wanted`` (it must come within ``timeout``)."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if wanted in line:
            return lines
    raise AssertionError(f"{wanted!r} did not come; the process said:\n{''.join(lines)}")


@pytest.mark.parametrize("step", ["added", "deleted", "removed"])
def test_sigkill_at_any_write_step_then_a_rerun_is_a_fresh_index(
    step: str, tmp_path: Path, minilm: Encoder, capsys: pytest.CaptureFixture[str]
) -> None:
    notes, database = write_notes(tmp_path / "notes"), tmp_path / "db"
    QZhouCollection.open("notes", path=database, model=DEMO_MODEL).sync(notes)
    edit_and_delete(notes)
    child = subprocess.Popen(
        index_command(notes, database), env=child_environment(QZHOU_PLUGINS_TEST_PAUSE_AT=step),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_line(child, f"paused at {step}")
        if step == "added":  # a second index of the collection meanwhile is refused, naming the holder
            code = main(["index", str(notes), "-c", "notes", "--db", str(database)])
            assert code == 1
            assert f"is being indexed by another process (pid {child.pid})" in capsys.readouterr().err
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    rerun = QZhouCollection.open("notes", path=database)
    rerun.sync(notes)
    assert state(rerun) == fresh_state(tmp_path, notes)


def wait_until(holds: Any, what: str, watch: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not holds():
        if time.monotonic() > deadline:
            watch.kill()
            said = watch.communicate(timeout=30)[0]
            raise AssertionError(f"the watch did not carry {what} within {timeout:.0f} s; it said:\n{said}")
        time.sleep(0.5)


def test_watch_follows_edits_and_deletions_until_ctrl_c(tmp_path: Path, minilm: Encoder) -> None:
    notes, database = write_notes(tmp_path / "notes"), tmp_path / "db"
    QZhouCollection.open("notes", path=database, model=DEMO_MODEL).sync(notes)
    watch = subprocess.Popen(
        index_command(notes, database, "--watch"), env=child_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    collection = QZhouCollection.open("notes", path=database)

    def texts() -> str:
        return " ".join(collection.collection.get(include=["documents"])["documents"])

    try:
        wait_for_line(watch, "Watching")
        (notes / "storage.txt").write_text("Keep tea in a tin: oolong keeps for years.", "utf-8")
        (notes / "history.md").unlink()
        (notes / "half.txt").write_bytes(b"Pu-erh is aged for years in a humid cellar."[:-1] + b"\xc3")
        wait_until(lambda: "oolong" in texts() and "Lu Yu" not in texts(), "the edit and the deletion", watch)
        # The half-written file did not stop the watch; once whole, it is read.
        (notes / "half.txt").write_text("Pu-erh is aged for years in a humid cellar, caf\u00e9.", "utf-8")
        wait_until(lambda: "humid cellar" in texts(), "the file written in two steps", watch)
        watch.send_signal(signal.SIGINT)
        rest = watch.communicate(timeout=60)[0]
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, rest
    assert "half.txt is not UTF-8 text" in rest and "read again next time" in rest
    assert rest.strip().splitlines()[-1].startswith("Stopped watching; collection 'notes' holds")
    assert state(QZhouCollection.open("notes", path=database)) == fresh_state(tmp_path, notes)


def test_query_json_and_pages(tmp_path: Path, minilm: Encoder, capsys: pytest.CaptureFixture[str]) -> None:
    """``query --json`` gives scripts every score and side; a chunk with a page shows it (PDF readers)."""
    collection = QZhouCollection.open("notes", path=tmp_path / "db", model=DEMO_MODEL)
    collection.add(
        ["Green tea is brewed at 70 to 80 degrees Celsius.", "Black tea takes water just off the boil."],
        metadatas=[
            {"source": "manual.pdf", "chunk": 0, "page": 23, "page_end": 24, "page_label": "xxiii"},
            {"source": "manual.pdf", "chunk": 1, "page": 25},
        ],
    )
    where = ["-c", "notes", "--db", str(tmp_path / "db"), "-k", "2"]
    assert main(["query", "green tea temperature", *where]) == 0
    out = capsys.readouterr().out
    assert "manual.pdf pp. 23-24 (chunk 0)" in out and "manual.pdf p. 25 (chunk 1)" in out
    assert main(["query", "green tea temperature", *where, "--mode", "hybrid", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    first = printed["hits"][0]
    assert (printed["query"], printed["mode"], first["rank"]) == ("green tea temperature", "hybrid", 1)
    assert (first["source"], first["page"], first["page_end"], first["page_label"]) == (
        "manual.pdf",
        23,
        24,
        "xxiii",
    )
    assert first["text"].startswith("Green tea") and first["found_by"] == ["dense", "lexical"]
    assert first["score_scale"] == "rrf" and -1 <= first["dense_score"] <= 1 and first["lexical_score"] > 0
