"""The other process of the Chroma tests: ``python chroma_child.py COMMAND JSON``.

Each command prints one ``result <json>`` line at the end, so that the tests can check what a fresh
process sees. ``connect`` is shared with the tests, which reach one database through either an
embedded path or a Chroma server.

- ``query``: with nothing but ``import qzhou_plugins.chroma``, get the collection with plain chromadb
  (no embedding function given) and query it by text;
- ``ingest``: stream SciFact abstracts into a collection, printing ``progress N`` as texts are read
  (the crash test kills this process part-way);
- ``count``: the number of records, with plain chromadb only (no model is loaded);
- ``race``: add texts to a collection at the same moment as the test process (see
  :func:`meet_before_writing`), and report the AddResult;
- ``upsert-then-hang``: upsert texts into a collection, and stop for good right after the Chroma write,
  before the lexical index is written (see :func:`hang_after_chroma_writes`): the test SIGKILLs it there.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from chromadb.api import ClientAPI

sys.path.insert(0, str(Path(__file__).resolve().parent))


def connect(spec: Mapping[str, Any]) -> ClientAPI:
    """A client for ``{"path": DIR}`` (embedded) or ``{"host": ..., "port": ...}`` (a server)."""
    import chromadb

    if "path" in spec:
        return chromadb.PersistentClient(path=spec["path"])
    return chromadb.HttpClient(host=spec["host"], port=spec["port"])


def scifact_records(corpus: str, limit: int) -> Iterator[tuple[str, dict[str, str]]]:
    """(text, metadata) of the first ``limit`` abstracts, embedded as the tests embed them."""
    from conftest import document_text

    with open(corpus, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number == limit:
                return
            document = json.loads(line)
            yield document_text(document), {"doc_id": document["_id"]}


def meet_before_writing(function: Any, folder: str, me: str, other: str, timeout: float = 300) -> None:
    """Make ``function.embed_documents`` wait, once it has embedded, until ``other`` has embedded too.

    Two writers of the same records then have both found them missing and embedded them before
    either writes: the race of two processes adding the same texts at once, every time, not by luck.
    Only the timing is arranged; the embedding and the writing are the real ones.
    """
    embed = function.embed_documents

    def embed_then_wait(texts: list[str], **options: Any) -> Any:
        vectors = embed(texts, **options)
        Path(folder, me).touch()
        deadline = time.monotonic() + timeout
        while not Path(folder, other).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{other} never came to write")
            time.sleep(0.01)
        return vectors

    function.embed_documents = embed_then_wait


def hang_after_chroma_writes(collection: Any) -> None:
    """Make the lexical side of ``collection`` say ``chroma written`` and wait forever instead of writing.

    Chroma has then taken the write and the lexical index has not: the one moment a SIGKILL leaves the
    two out of step. Only the timing is arranged; the ids were really marked pending and Chroma really
    written.
    """

    def hang(*_: Any) -> None:
        print("chroma written", flush=True)
        while True:
            time.sleep(60)

    collection.lexical.added = hang
    collection.lexical.deleted = hang


def main(command: str, payload: dict[str, Any]) -> dict[str, Any]:
    client = connect(payload["spec"])
    if command == "count":
        return {"count": client.get_collection(payload["name"], embedding_function=None).count()}
    if command == "query":
        import qzhou_plugins.chroma  # noqa: F401  (registers the embedding function: nothing else is needed)

        collection = client.get_collection(payload["name"])
        function = collection.configuration["embedding_function"]
        found = collection.query(query_texts=payload["queries"], n_results=payload["n_results"])
        return {
            "function": f"{type(function).__module__}.{type(function).__qualname__}",
            "config": function.get_config(),
            "ids": found["ids"],
            "distances": found["distances"],
        }
    from qzhou_plugins.chroma import QZhouCollection

    if command == "ingest":
        collection = QZhouCollection.open(
            payload["name"], client=client, model=payload["model"], max_length=payload["max_length"]
        )
        records = list(scifact_records(payload["corpus"], payload["limit"]))

        def texts() -> Iterator[str]:
            """The texts as a stream that reports how far the ingestion has read."""
            for read, (text, _) in enumerate(records, start=1):
                if read % payload["report_every"] == 0:
                    print(f"progress {read}", flush=True)
                yield text

        metadatas = (metadata for _, metadata in records)
        added = collection.add(texts(), metadatas, batch_size=payload["batch_size"], show_progress=False)
        return {"added": added.added, "skipped": added.skipped}
    if command == "race":
        collection = QZhouCollection.open(payload["name"], client=client)
        meet_before_writing(collection.embedding_function, payload["folder"], "child", "parent")
        added = collection.add(payload["texts"], show_progress=False)
        return {
            "added": added.added,
            "skipped": added.skipped,
            "present_on_write": added.present_on_write,
            "exact": added.exact,
        }
    if command == "upsert-then-hang":
        collection = QZhouCollection.open(payload["name"], client=client)
        hang_after_chroma_writes(collection)
        collection.upsert(payload["texts"], ids=payload["ids"], show_progress=False)
        return {}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    result = main(sys.argv[1], json.loads(sys.argv[2]))
    print("result " + json.dumps(result), flush=True)
