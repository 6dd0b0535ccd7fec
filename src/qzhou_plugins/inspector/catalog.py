"""The collections the page shows: where they are, each opened once, and what each records.

A collection is opened the way ``qzhou-plugins query`` opens it (the command line's own
:func:`~qzhou_plugins.cli.collection.open_collection`, so an unknown name gets the command's
message) and kept: its recorded model is loaded once, by its first query, and shared by every
request after it. What a collection records
(model, exact prefixes, vector family, dimension, analyzer, lexical engine) is read from its record,
without loading the model, so the collections view is quick and describes a collection even when its
model cannot be loaded (its first search then says why).
"""

from __future__ import annotations

import argparse
import threading
from typing import Any


class Catalog:
    """The collections of one database (``--db``) or Chroma server (``--host``/``--port``)."""

    def __init__(self, where: argparse.Namespace) -> None:
        self.where = where
        self._opened: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self) -> Any:
        from ..cli.where import open_client

        return open_client(self.where, create=False)

    def names(self) -> list[str]:
        """The names of the collections, sorted."""
        return sorted(collection.name for collection in self.client().list_collections())

    def open(self, name: str) -> Any:
        """The :class:`~qzhou_plugins.chroma.QZhouCollection` called ``name``, opened once, as ``query``
        opens it (the model and options it records; a missing one refused with the command's message)."""
        with self._lock:
            if name not in self._opened:
                from ..cli.collection import open_collection

                arguments = argparse.Namespace(**vars(self.where), collection=name, model=None,
                                               max_length=None, base_url=None, analyzer=None,
                                               lexical_engine=None)  # fmt: skip
                self._opened[name] = open_collection(arguments, create=False)
            return self._opened[name]

    def describe(self, name: str) -> dict[str, Any]:
        """What the collection records and the state of its lexical index, as the page lists them.

        Read from the record without loading the model (opening a collection loads it, to check the
        record against it): a collection of a model that cannot be loaded is still described.
        """
        from ..integrations.chroma.fingerprint import REFERENCE_VECTORS, recorded_config
        from ..integrations.chroma.opening import existing_collection

        client = self.client()
        raw = existing_collection(client, name)
        if raw is None:
            self.open(name)  # raises the error `query` gives for a missing collection
        config = recorded_config(raw)
        opened = self._opened.get(name)
        side = opened.lexical if opened is not None else self._lexical_side(client, raw)
        try:
            settings = side.settings()
            lexical = lexical_state(side, raw.count())
        finally:
            if opened is None:
                side.close()
        return {
            "name": name,
            "count": raw.count(),
            "model": config["model"],
            "task": config.get("task"),
            "query_prefix": config["query_prefix"],
            "document_prefix": config["document_prefix"],
            "dimension": config["dimension"],
            "max_length": config.get("max_length"),
            "pooling": config.get("pooling"),
            "normalize": config.get("normalize"),
            "vector_family": config.get("vector_family") or REFERENCE_VECTORS,
            "source_model": config.get("source_model"),
            "analyzer": settings["analyzer"],
            "lexical_engine": settings["engine"],
            "lexical_index": lexical,
        }

    def _lexical_side(self, client: Any, raw: Any) -> Any:
        """The collection's lexical index, opened (and repaired) as opening the collection would."""
        from ..integrations.chroma.lexical_record import lexical_root
        from ..integrations.chroma.lexical_side import LexicalSide

        root = lexical_root(client, self.where.lexical_dir)
        return LexicalSide.opened(client, raw, root, None, None)

    def summaries(self) -> list[dict[str, Any]]:
        """Every collection described; one that cannot be opened says why instead."""
        from ..cli.errors import one_line

        found = []
        for name in self.names():
            try:
                found.append(self.describe(name))
            except Exception as error:  # one bad collection must not hide the others
                found.append({"name": name, "error": one_line(error)})
        return found


def lexical_state(side: Any, total: int) -> dict[str, Any]:
    """The state of a lexical index (a ``LexicalSide``) of a collection of ``total`` records, in words:
    in step, being repaired, out of step, not built yet, or unavailable."""
    folder = None if side.folder is None else str(side.folder)
    if side.index is None:
        if folder is None:
            state = "none: a collection on a Chroma server keeps one only where --lexical-dir says"
        elif side.error is not None:
            state = f"unavailable: {side.error}"
        else:
            state = "not built yet: the first lexical or hybrid query builds it from Chroma's documents"
        return {"state": state, "in_step": False, "folder": folder, "count": None}
    count, pending = side.index.count(), len(side.index.pending())
    if pending:
        state = f"being repaired: {pending} write(s) pending"
    elif count != total:
        state = f"out of step ({count} of {total}): repaired from Chroma when the collection is next opened"
    else:
        state = "in step"
    return {"state": state, "in_step": state == "in step", "folder": folder, "count": count}
