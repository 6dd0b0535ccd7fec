"""Indexing a folder: a fresh index, re-indexing it, and LangChain's indexing API on the same files.

A folder of small text files (SciFact abstracts, one per file, read from ../shared/data; generated
text when that is absent) is indexed with all-MiniLM-L6-v2 (the packaged copy), in one process with
the model loaded before any timing:

- ours: ``QZhouCollection.sync`` (what ``qzhou-plugins index`` runs): a fresh index, a re-index with
  nothing changed (target: at most 5% of the fresh time), and one with 1% of the files changed (at most
  10%); each re-index opens the collection again, as a new ``index`` command would;
- LangChain: ``index()`` of langchain-classic with ``SQLRecordManager``, ``cleanup="incremental"``,
  langchain-chroma's ``Chroma`` and the same model through ``QZhouEmbeddings``, on the same files cut by
  the same splitter (``RecursiveCharacterTextSplitter``, 1000 characters, 100 overlap): the same steps,
  and whether both stores hold the same chunk texts;
- the whole ``index`` command with nothing changed, as a new process (imports included), for scale.

Every figure comes from one run and is printed as a table with its ratios. ``--sections`` picks the
parts (``sync``, ``langchain``, ``command``); other benchmarks of indexing may add theirs.

    .venv/bin/python benchmarks/bench_ingest.py [--files 2000] [--repeats 2] [--sections sync,langchain]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qzhou_plugins import DEMO_MODEL, Encoder
from qzhou_plugins.chroma import QZhouCollection
from qzhou_plugins.documents import CHUNK_OVERLAP, CHUNK_SIZE, find_files, read_text, source_name

DATA = Path(os.environ.get("QZHOU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SECTIONS = ("sync", "langchain", "command")
CHANGED_SHARE = 0.01


@dataclass(frozen=True)
class Seconds:
    """Wall-clock seconds, and CPU seconds of this process (all its threads): less sensitive to the
    other processes of a busy machine."""

    wall: float
    cpu: float


@dataclass
class Run:
    """The figures of one benchmark run, printed together at the end."""

    folder: Path
    work: Path
    rows: list[tuple[str, Seconds, Seconds | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_folder(folder: Path, count: int) -> str:
    """``count`` small text files, one abstract each; says where their text comes from."""
    folder.mkdir(parents=True)
    corpus = DATA / "scifact" / "corpus.jsonl"
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as handle:
            for number, line in zip(range(count), handle, strict=False):
                row = json.loads(line)
                (folder / f"{number:05d}.txt").write_text(f"{row['title']}\n\n{row['text']}", "utf-8")
        return f"SciFact abstracts from {corpus}"
    words = ["tea", "leaf", "water", "brew", "green", "black", "oolong", "steep", "cup", "aroma"]
    generator = random.Random(0)
    for number in range(count):
        text = " ".join(generator.choice(words) for _ in range(generator.randint(80, 300)))
        (folder / f"{number:05d}.txt").write_text(text, "utf-8")
    return "generated text (SciFact is absent)"


def change_files(folder: Path, share: float) -> int:
    """Append a sentence to ``share`` of the files (spread over the folder); how many were changed."""
    files = sorted(folder.iterdir())
    step = max(1, round(1 / share))
    for file in files[::step]:
        with file.open("a", encoding="utf-8") as handle:
            handle.write(f"\n\nA note added to {file.stem} after the first index.")
    return len(files[::step])


def timed(action: Callable[[], object]) -> tuple[Seconds, object]:
    start, cpu = time.perf_counter(), time.process_time()
    result = action()
    return Seconds(time.perf_counter() - start, time.process_time() - cpu), result


def ours(run: Run, name: str) -> Any:
    """``QZhouCollection.sync`` of the folder into the database ``name``, opened anew each time."""
    database = run.work / name

    def sync() -> object:
        collection = QZhouCollection.open("bench", path=database, model=DEMO_MODEL)
        return collection.sync(run.folder, show_progress=False)

    sync.database = database  # type: ignore[attr-defined]
    return sync


def langchain(run: Run, name: str) -> Any:
    """LangChain's indexing API over the same files, splitter and model, into the store ``name``."""
    from langchain_chroma import Chroma
    from langchain_classic.indexes import SQLRecordManager, index
    from langchain_core.documents import Document
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from qzhou_plugins.langchain import QZhouEmbeddings

    store = Chroma("bench", QZhouEmbeddings(model=DEMO_MODEL), persist_directory=str(run.work / name))
    records = SQLRecordManager("chroma/bench", db_url=f"sqlite:///{run.work / name}-records.sqlite")
    records.create_schema()
    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)

    def sync() -> object:
        documents = [
            Document(page_content=read_text(file), metadata={"source": source_name(file)})
            for file in find_files([run.folder])
        ]
        chunks = [chunk for chunk in splitter.split_documents(documents) if chunk.page_content.strip()]
        return index(chunks, records, store, cleanup="incremental", source_id_key="source")

    sync.store = store  # type: ignore[attr-defined]
    return sync


def same_texts(database: Path, store: Any) -> bool:
    """Whether our collection and LangChain's store hold the same chunk texts."""
    collection = QZhouCollection.open("bench", path=database)
    mine = sorted(collection.collection.get(include=["documents"])["documents"])
    theirs = sorted(store.get(include=["documents"])["documents"])
    return mine == theirs


def command_seconds(run: Run, database: Path) -> Seconds:
    """``qzhou-plugins index`` as a new process, nothing changed: start, imports and all."""
    command = [sys.executable, "-m", "qzhou_plugins.cli", "index", str(run.folder), "-c", "bench"]
    before = os.times()
    start = time.perf_counter()
    subprocess.run([*command, "--db", str(database)], check=True, capture_output=True)
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return Seconds(time.perf_counter() - start, cpu)


def fresh(run: Run, sections: list[str], repeats: int) -> tuple[Any, Any]:
    """The fresh indexes, ``repeats`` times each into new stores, the order alternating (the first run
    of a process may pay for warming up); the best time of each. Returns the last stores' syncs."""
    best: dict[str, Seconds] = {}
    for repeat in range(repeats):
        mine = ours(run, f"ours-{repeat}")
        theirs = langchain(run, f"langchain-{repeat}") if "langchain" in sections else None
        order = [("ours", mine), ("langchain", theirs)]
        for side, action in order if repeat % 2 == 0 else order[::-1]:
            if action is not None:
                seconds, summary = timed(action)
                if side not in best or seconds.wall < best[side].wall:
                    best[side] = seconds
                if side == "ours" and repeat == 0:
                    run.notes.append(f"ours, fresh index: {summary.line()}")  # type: ignore[attr-defined]
    run.rows.append((f"fresh index (best of {repeats})", best["ours"], best.get("langchain")))
    return mine, theirs


def measure(run: Run, sections: list[str], repeats: int) -> None:
    mine, theirs = fresh(run, sections, repeats)
    for label, share in (
        ("re-index, nothing changed", None),
        ("re-index, 1% of files changed", CHANGED_SHARE),
    ):
        if share is not None:
            run.notes.append(f"{change_files(run.folder, share)} file(s) changed before the last step")
        seconds, summary = timed(mine)
        run.notes.append(f"ours, {label}: {summary.line()}")  # type: ignore[attr-defined]
        other = timed(theirs)[0] if theirs is not None else None
        run.rows.append((label, seconds, other))
        if share is None and "command" in sections:
            run.rows.append(
                ("  the whole index command (new process)", command_seconds(run, mine.database), None)
            )
    if theirs is not None:
        run.notes.append(f"same chunk texts stored by both: {same_texts(mine.database, theirs.store)}")


def report(run: Run) -> None:
    """One row per step: wall and CPU seconds of each, ours as a share of our fresh index, LangChain/ours."""
    fresh = run.rows[0][1]
    print(
        f"{'step':<40} {'ours wall':>9} {'cpu':>7} {'of fresh (wall/cpu)':>20} "
        f"{'LangChain wall':>14} {'cpu':>7} {'LangChain/ours (wall/cpu)':>26}"
    )
    for label, mine, other in run.rows:
        share = f"{mine.wall / fresh.wall:.1%} / {mine.cpu / fresh.cpu:.1%}"
        versus = ""
        if other is not None:
            ratios = f"{other.wall / mine.wall:.2f}x / {other.cpu / mine.cpu:.2f}x"
            versus = f"{other.wall:14.2f} {other.cpu:7.2f} {ratios:>26}"
        print(f"{label:<40} {mine.wall:9.2f} {mine.cpu:7.2f} {share:>20} {versus}")
    for note in run.notes:
        print(note)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000, help="files in the folder (default 2000)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh indexes of each side; the best is kept")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    sections = [name for name in args.sections.split(",") if name]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as work:
        run = Run(folder=Path(work) / "files", work=Path(work))
        print(f"{args.files} files: {write_folder(run.folder, args.files)}; model {DEMO_MODEL}, "
              f"{os.environ.get('OMP_NUM_THREADS', 'all')} thread(s)")  # fmt: skip
        # Loaded, and run on chunk-sized texts, before any timing.
        Encoder.shared(model=DEMO_MODEL).encode_documents([" ".join(["warm up"] * 120)] * 32)
        if "sync" in sections or "langchain" in sections:
            measure(run, sections, max(1, args.repeats))
            report(run)


if __name__ == "__main__":
    main()
