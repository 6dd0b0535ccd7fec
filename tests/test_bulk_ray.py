"""Bulk embedding on Ray Data: the same rows and vectors as the in-process job, whatever is killed.

One Ray cluster serves the whole test session (``ray_session`` in conftest.py, started once: Ray's
start-up takes seconds), with 2 CPUs as on CI. The 2,000-abstract comparison of the three modes
(in-process, one actor, two actors) against the Encoder lives here so that its reference vectors
are computed once. Abstracts are cut to 16 tokens: which id gets which vector, and exactly once,
does not depend on their length.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qzhou_plugins import Encoder
from qzhou_plugins.bulk import OutputMismatchError, embed_corpus
from qzhou_plugins.evaluation import load_beir
from test_bulk import MAX_LENGTH, MINI, cosines, snapshot, stored, stored_metadata, write_jsonl

ray = pytest.importorskip("ray", reason="Ray Data is the 'ray' extra (part of the test extra)")

ROWS = 2000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, scifact_corpus: list[dict[str, str]]) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("ray-corpus") / "corpus.jsonl", scifact_corpus[:ROWS])


@pytest.fixture(scope="module")
def reference(scifact_corpus: list[dict[str, str]], scifact_dir: Path) -> dict[str, np.ndarray]:
    """The in-process Encoder's vectors of the 2,000 abstracts, joined as `eval retrieval` joins them."""
    texts = load_beir(scifact_dir).corpus
    ids = [row["_id"] for row in scifact_corpus[:ROWS]]
    vectors = Encoder.shared(**MINI).encode_documents([texts[i] for i in ids])
    return dict(zip(ids, vectors, strict=True))


@pytest.mark.parametrize(
    ("ray_mode", "actors"), [(None, 1), (True, 1), (True, 2)], ids=["in-process", "ray-1", "ray-2"]
)
def test_2000_abstracts_every_id_once_with_the_encoders_vector(
    ray_session: None,
    corpus: Path,
    reference: dict[str, np.ndarray],
    scifact_corpus: list[dict[str, str]],
    tmp_path: Path,
    ray_mode: bool | None,
    actors: int,
) -> None:
    result = embed_corpus(corpus, tmp_path / "out", ray=ray_mode, actors=actors, shard_rows=500, **MINI)
    assert (result.rows, result.added, result.already_stored) == (ROWS, ROWS, 0)
    vectors = stored(tmp_path / "out")  # fails on an id stored twice
    assert vectors.keys() == reference.keys()
    assert cosines(vectors, reference).min() >= 0.99999
    assert result.tokens == ROWS * MAX_LENGTH  # every abstract is longer than MAX_LENGTH tokens
    titles = {row["_id"]: {"title": row["title"]} for row in scifact_corpus[:ROWS]}
    assert stored_metadata(tmp_path / "out") == titles  # read in Ray's tasks as in this process


def actor_processes() -> list[psutil.Process]:
    """This session's embedding actors: descendants of the test process (the driver of the cluster)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "EmbedBatches" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_killed_actor_is_replaced_and_every_id_is_stored_once(
    ray_session: None, corpus: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(corpus.read_text("utf-8").splitlines(keepends=True)[:200]), "utf-8")
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_the_actor_mid_run() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            actors = actor_processes()
            if actors and len(list(out.glob("part-*.parquet"))) >= 1:
                os.kill(actors[0].pid, signal.SIGKILL)
                killed.append(len(list(out.glob("part-*.parquet"))))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_actor_mid_run)
    killer.start()
    result = embed_corpus(subset, out, ray=True, actors=1, shard_rows=20, **MINI)
    killer.join()
    assert killed and killed[0] < 10, "the actor was not killed while the job ran"
    assert result.added == 200
    vectors = stored(out)
    assert cosines(vectors, {i: reference[i] for i in vectors}).min() >= 0.99999
    assert len(vectors) == 200


def test_a_parquet_source_on_ray_then_reruns_add_nothing_or_are_refused(
    ray_session: None, scifact_corpus: list[dict[str, str]], tmp_path: Path
) -> None:
    """Ray's parquet read path; a finished rerun starts no actor and adds nothing; other settings
    are refused (the fingerprint then comes from one Ray task) and nothing is touched."""
    source = tmp_path / "in"
    source.mkdir()
    for number, start in enumerate((0, 30)):
        rows = [{k: row[k] for k in ("_id", "title", "text")} for row in scifact_corpus[start : start + 30]]
        table = pa.Table.from_pylist(rows).append_column("n", pa.array(range(start, start + 30)))
        pq.write_table(table, source / f"{number}.parquet")
    out = tmp_path / "out"
    embed_corpus(source, out, ray=True, shard_rows=25, **MINI)
    encoder = Encoder.shared(**MINI)
    texts = [f"{row['title']} {row['text']}".strip() for row in scifact_corpus[:60]]
    expected = dict(
        zip([row["_id"] for row in scifact_corpus[:60]], encoder.encode_documents(texts), strict=True)
    )
    assert cosines(stored(out), expected).min() >= 0.99999
    metadata = {row["_id"]: {"title": row["title"], "n": n} for n, row in enumerate(scifact_corpus[:60])}
    assert stored_metadata(out) == metadata  # the other columns, read by Ray's parquet tasks
    before = snapshot(out)
    assert embed_corpus(source, out, ray=True, shard_rows=25, **MINI).added == 0
    assert {k: v[2] for k, v in snapshot(out).items()} == {k: v[2] for k, v in before.items()}
    before = snapshot(out)
    with pytest.raises(
        OutputMismatchError, match=f"max length: the output has {MAX_LENGTH}, this run has 48"
    ):
        embed_corpus(source, out, ray=True, shard_rows=25, **{**MINI, "max_length": 48})
    assert snapshot(out) == before


CHILD = """
import sys
from qzhou_plugins.bulk import embed_corpus
options = dict(model={model!r}, max_length={max_length}, shard_rows=20, ray=True, show_progress=False)
embed_corpus(sys.argv[1], sys.argv[2], **options)
"""


def temp_dirs(process: psutil.Process) -> list[str]:
    """The Ray session folder named on a Ray process's command line (``--temp_dir=...``)."""
    try:
        return re.findall(r"--temp[-_]dir=(\S+)", " ".join(process.cmdline()))
    except psutil.Error:
        return []


def test_a_killed_ray_driver_is_completed_by_a_rerun(
    ray_session: None, corpus: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """The driver of its own local cluster, SIGKILLed: its cluster goes with it, the rerun completes."""
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(corpus.read_text("utf-8").splitlines(keepends=True)[:200]), "utf-8")
    out = tmp_path / "out"
    code = CHILD.format(model=MINI["model"], max_length=MAX_LENGTH)
    child = subprocess.Popen([sys.executable, "-c", code, str(subset), str(out)], env={**os.environ})
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("part-*.parquet"))) < 2 and child.poll() is None:
            assert time.monotonic() < deadline, "the child wrote no shards"
            time.sleep(0.05)
        family = psutil.Process(child.pid).children(recursive=True)
        agents = [process for process in family if process.name().endswith("Agent")]
        session_dirs = {found for process in family for found in temp_dirs(process)}
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs([p for p in family if p not in agents], timeout=30)
    assert not alive, f"the killed driver's Ray processes live on: {alive}"
    for agent in agents:  # Ray's per-node agents notice that their raylet is gone a minute or two later
        with contextlib.suppress(psutil.NoSuchProcess):
            agent.kill()
    for folder in session_dirs:
        shutil.rmtree(folder, ignore_errors=True)  # the killed driver could not remove its session files
    before = len(stored(out))
    assert 40 <= before < 200
    result = embed_corpus(subset, out, shard_rows=20, **MINI)  # in-process: the output is the same
    assert (result.already_stored, result.added) == (before, 200 - before)
    vectors = stored(out)
    assert len(vectors) == 200 and cosines(vectors, {i: reference[i] for i in vectors}).min() >= 0.99999
