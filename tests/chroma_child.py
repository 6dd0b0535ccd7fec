"""The other process of the Chroma tests: ``python chroma_child.py COMMAND JSON``.

Each command prints one ``result <json>`` line at the end, so that the tests can check what a fresh
process sees. ``connect`` is shared with the tests, which reach one database through either an
embedded path or a Chroma server.

- ``fill``: create a collection with QZhouCollection and add texts;
- ``query``: with nothing but ``import qzhou_plugins.chroma``, get the collection with plain chromadb
  (no embedding function given) and query it by text;
- ``ingest``: stream SciFact abstracts into a collection, printing ``progress N`` as texts are read
  (the crash test kills this process part-way);
- ``count``: the number of records, with plain chromadb only (no model is loaded).
"""

from __future__ import annotations

import json
import sys
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

    if command == "fill":
        collection = QZhouCollection.open(
            payload["name"], client=client, model=payload["model"], task=payload.get("task")
        )
        added = collection.add(payload["texts"], payload.get("metadatas"))
        return {"added": added.added, "config": collection.embedding_function.get_config()}
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
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    result = main(sys.argv[1], json.loads(sys.argv[2]))
    print("result " + json.dumps(result), flush=True)
