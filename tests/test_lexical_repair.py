"""Repairing an index from its source of truth (here a dict): pending ids after a crash between the
two writes, a count that differs, and a first build for a source that had no index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from qzhou_plugins.lexical import LexicalIndex, Repair, open_index, repair


def repaired(index: LexicalIndex, source: dict[str, str | None], **options: object) -> Repair:
    calls = {"ids": 0}

    def source_ids() -> list[str]:
        calls["ids"] += 1
        return list(source)

    result = repair(
        index, len(source), source_ids, lambda ids: {i: source[i] for i in ids if i in source}, **options
    )
    assert calls["ids"] == int(result.compared_all)  # every id is read only when the counts differ
    return result


def test_in_step_costs_nothing_and_changes_nothing(tmp_path: Path) -> None:
    source = {"a": "alpha", "b": "beta"}
    with open_index(tmp_path / "lexical") as index:
        index.add(list(source), list(source.values()))
        assert repaired(index, source) == Repair()


def test_pending_ids_are_redone_from_the_source(tmp_path: Path) -> None:
    """A crash after the source changed and before the index did: same ids, one text replaced."""
    source: dict[str, str | None] = {"a": "alpha", "b": "beta", "c": "gamma"}
    with open_index(tmp_path / "lexical") as index:
        index.add(list(source), list(source.values()))
        index.mark_pending(["b", "c", "d"])
        source["b"] = "delta"  # replaced, not yet in the index
        source["d"] = None  # added without a text
        del source["c"]  # deleted, still in the index
        result = repaired(index, source)
        assert result == Repair(added=2, deleted=1)
        assert index.pending() == []
        assert [hit.id for hit in index.search("delta")] == ["b"] and index.search("beta") == []
        assert sorted(index.ids()) == ["a", "b", "d"]


def test_a_count_that_differs_makes_every_id_compared(tmp_path: Path) -> None:
    source = {f"doc{i}": f"text number {i}" for i in range(25)}
    with open_index(tmp_path / "lexical") as index:
        index.add(["doc1", "stale"], ["text number 1", "gone from the source"])
        result = repaired(index, source, batch_size=7, show_progress=True)
        assert result == Repair(added=24, deleted=1, compared_all=True)
        assert sorted(index.ids()) == sorted(source)
        assert [hit.id for hit in index.search("number 17")][:1] == ["doc17"]


CHILD = """
import os, sys
from qzhou_plugins.lexical import open_index
index = open_index(sys.argv[1])
index.mark_pending(["a"])
os.kill(os.getpid(), 9)  # killed between the source's write and the index's
"""


def test_pending_marks_survive_a_killed_process(tmp_path: Path) -> None:
    folder = tmp_path / "lexical"
    with open_index(folder) as index:
        index.add(["a"], ["old text"])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-c", CHILD, str(folder)]
    done = subprocess.run(command, env=env, capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    with open_index(folder) as index:
        assert index.pending() == ["a"]
        assert repaired(index, {"a": "new text"}) == Repair(added=1)
        assert [hit.id for hit in index.search("new")] == ["a"] and index.pending() == []


@pytest.mark.parametrize("engine", ["fts5", "tantivy"])
def test_repair_works_on_both_engines(tmp_path: Path, engine: str) -> None:
    """Equal counts with other ids would pass unseen (see repairing.py): here the counts differ."""
    if engine == "tantivy":
        pytest.importorskip("tantivy", reason="tantivy is the 'tantivy' extra")
    source = {"a": "alpha", "b": "beta", "c": "gamma"}
    with open_index(tmp_path / "lexical", engine=engine) as index:
        index.add(["a", "z"], ["old alpha", "zeta"])
        index.mark_pending(["a"])
        assert repaired(index, source) == Repair(added=3, deleted=1, compared_all=True)
        assert sorted(index.ids()) == ["a", "b", "c"] and index.pending() == []
        assert [hit.id for hit in index.search("alpha old")] == ["a"] and index.search("old") == []
