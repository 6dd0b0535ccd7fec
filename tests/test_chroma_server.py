"""The QZhouCollection suite through ``chromadb.HttpClient`` against a real ``chroma run`` server.

The server is started once for this module on a free loopback port with a temporary data folder,
and stopped at the end. Only 127.0.0.1 is ever contacted. The tests are skipped only if the
``chroma`` executable is missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.api import ClientAPI

from qzhou_plugins import DEMO_MODEL
from qzhou_plugins.chroma import LexicalUnavailableError, QZhouCollection
from qzhou_plugins.cli import main
from test_bulk import DOCUMENTS
from test_chroma import CollectionSuite, clean_ingestion, crash_records  # noqa: F401  (fixtures)
from test_hybrid import CORPUS, assert_in_step


class TestServerCollection(CollectionSuite):
    """Every test of the suite, with a client of the server (and the same server for child processes)."""

    @pytest.fixture
    def client_spec(self, chroma_server: dict[str, Any]) -> dict[str, Any]:
        return chroma_server

    def test_the_server_really_is_a_server(self, client: ClientAPI) -> None:
        assert isinstance(client, chromadb.api.client.Client)
        assert client.get_settings().chroma_api_impl.endswith("FastAPI")


def test_load_index_and_query_reach_a_server_the_same_way(
    chroma_server: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`load --host/--port` stores an `embed` output in the server, where `query` finds it with its
    sources, and where `index` of the same documents then finds every chunk already stored."""
    server = ["--host", chroma_server["host"], "--port", str(chroma_server["port"])]
    model = ["--model", DEMO_MODEL, "--max-length", "64"]
    out = tmp_path / "vectors"
    assert main(["embed", str(DOCUMENTS), "--out", str(out), "--with-text", *model]) == 0
    assert main(["load", str(out), "-c", "served-notes", *server]) == 0
    printed = capsys.readouterr().out
    where = f"Chroma server {chroma_server['host']}:{chroma_server['port']}"
    assert f"into collection 'served-notes' ({where})" in printed
    client = chromadb.HttpClient(**chroma_server)
    rows = QZhouCollection.open("served-notes", client=client, create=False).count()
    assert rows > len(list(DOCUMENTS.iterdir()))
    assert main(["query", "a lidded bowl to brew tea", "-c", "served-notes", "-k", "1", *server]) == 0
    assert re.search(r"^1\. \S+  .*glossary\.jsonl:\d+ \(chunk 0\)$", capsys.readouterr().out, re.MULTILINE)
    assert main(["index", str(DOCUMENTS), "-c", "served-notes", *server, *model]) == 0
    assert f"0 chunk(s) added, 0 removed; the collection holds {rows}." in capsys.readouterr().out


def test_hybrid_on_a_server_needs_a_lexical_path_and_then_keeps_it_in_step(
    chroma_server: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server's collection has no folder here: lexical and hybrid queries say how to give one, and with
    one the index is built from the server's documents and kept in step by this client's writes."""
    client = chromadb.HttpClient(**chroma_server)
    served = QZhouCollection.open("served-hybrid", client=client, model=DEMO_MODEL)
    served.add([text for _, text, _ in CORPUS], ids=[id_ for id_, _, _ in CORPUS])
    assert served.lexical.folder is None and served.query("E4711", n_results=1)[0].hits  # dense works
    with pytest.raises(LexicalUnavailableError, match=r"pass lexical_path=DIR to QZhouCollection\.open"):
        served.query("E4711", mode="hybrid")
    local = QZhouCollection.open("served-hybrid", client=client, lexical_path=tmp_path / "lexical")
    assert [hit.id for hit in local.query("E4711", mode="lexical")[0].hits] == ["parts-2"]
    local.upsert(["Error code E4712 means the pump is dry. ref08z"], ids=["parts-2"])
    assert_in_step(local)
    server = ["-c", "served-hybrid", "--host", chroma_server["host"], "--port", str(chroma_server["port"])]
    assert main(["query", "E4712", *server, "--mode", "hybrid"]) == 1
    assert "--lexical-dir DIR on the command line" in capsys.readouterr().err
    assert (
        main(["query", "E4712", *server, "--mode", "hybrid", "--lexical-dir", str(tmp_path / "lexical")]) == 0
    )
    assert "[dense " in capsys.readouterr().out.splitlines()[0]
