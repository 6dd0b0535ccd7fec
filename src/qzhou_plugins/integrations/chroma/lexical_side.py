"""The lexical side of a collection: its BM25 index (:mod:`.lexical_record` says where), kept in step.

Chroma is the source of truth. Every write (:mod:`.writing`, :mod:`.changing`) marks its ids pending in
the index, writes Chroma, then writes the index, all under the collection's write lock. A process killed
between the two writes leaves the marks; the next open redoes those ids from Chroma's stored documents
(and compares every id when the counts differ), saying so in one log line. A lexical write that fails
is logged, never raised: the Chroma write stands, and a ``<name>.rebuild`` marker beside the index makes
the next open drop the index. A collection with documents and no index (made by an earlier version, or
dropped so) gets one on its first lexical query, built from Chroma with a progress bar.

The index folder is keyed by the collection's name, so a ``reembed`` in place (a staging collection
that then takes the name) keeps it: the texts did not change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from ...encoder import wants_progress
from ...lexical.base import LexicalIndex
from ...lexical.folder import remove_index
from ...lexical.repairing import Repair, repair
from ...lexical.settings import (
    DEFAULT_ANALYZER,
    DEFAULT_ENGINE,
    SETTINGS_FILE,
    LexicalIndexError,
    LexicalSettingsError,
)
from .lexical_record import record_settings, settle_settings
from .migration import pages
from .writing import stored_documents, write_lock

logger = logging.getLogger("qzhou_plugins")

REBUILD_SUFFIX = ".rebuild"
"""``<root>/<name>.rebuild``: a lexical write failed; the index is dropped when the collection opens."""


class LexicalUnavailableError(LexicalIndexError):
    """A lexical or hybrid query on a collection whose lexical index cannot be used (how to fix it said)."""


# -- the side -----------------------------------------------------------------------------------------


class LexicalSide:
    """A collection's lexical index: opened and repaired, written in step, built when first needed.

    Its write methods (:meth:`mark`, :meth:`added`, :meth:`deleted`) never raise: a failure is logged
    and leaves the rebuild marker, so that no Chroma write is ever lost to the lexical side.
    """

    def __init__(self, root: Path | None, name: str, settings: Mapping[str, str | None]) -> None:
        self.root = root
        self.name = name
        self.asked = dict(settings)
        self.index: LexicalIndex | None = None
        self.error: BaseException | None = None
        self._lock = threading.RLock()

    @classmethod
    def opened(
        cls,
        client: ClientAPI,
        collection: Collection,
        root: Path | None,
        analyzer: str | None,
        engine: str | None,
    ) -> LexicalSide:
        """The side of ``collection`` in ``root``, with the settings it records (others refused), opened."""
        side = cls(root, collection.name, settle_settings(collection, analyzer, engine))
        side.open(client, collection)
        return side

    @property
    def folder(self) -> Path | None:
        return None if self.root is None else self.root / self.name

    @property
    def marker(self) -> Path | None:
        return None if self.root is None else self.root / f"{self.name}{REBUILD_SUFFIX}"

    # -- opening ------------------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """The analyzer and engine in use: the index's, else those recorded or asked, else the defaults."""
        if self.index is not None:
            return {"analyzer": self.index.settings.analyzer, "engine": self.index.settings.engine}
        return {
            "analyzer": self.asked.get("analyzer") or DEFAULT_ANALYZER,
            "engine": self.asked.get("engine") or DEFAULT_ENGINE,
        }

    def open(self, client: ClientAPI, collection: Collection) -> None:
        """Open the index and repair it from Chroma; create it for a new or empty collection.

        A collection with documents and no index is left to be built by its first lexical query.
        A failure is remembered, for that query to report; dense use of the collection goes on.
        """
        if self.folder is None:
            return
        try:
            with write_lock(client):
                self._drop_after_a_failed_write()
                if (self.folder / SETTINGS_FILE).is_file():
                    self.index = self._open_index(create=False)
                    self._repair(collection)
                elif collection.count() == 0:
                    self.index = self._open_index(create=True)
                    record_settings(collection, asdict(self.index.settings))
        except Exception as error:  # a lexical failure never stops the dense use of a collection
            self._fail_to_open(error)

    def _drop_after_a_failed_write(self) -> None:
        assert self.folder is not None and self.marker is not None
        if self.marker.exists():
            logger.warning(
                "a write to the lexical index of %r failed earlier: the index is dropped, and rebuilt from "
                "Chroma's documents by the first lexical or hybrid query",
                self.name,
            )
            remove_index(self.folder)
            self.marker.unlink()

    def _open_index(self, *, create: bool) -> LexicalIndex:
        from ...lexical.opening import open_index

        assert self.folder is not None
        try:
            return open_index(
                self.folder, engine=self.asked["engine"], analyzer=self.asked["analyzer"], create=create
            )
        except LexicalSettingsError:
            # The index disagrees with what the collection records: it belonged to an older collection
            # of this name (deleted with plain Chroma). The collection's record wins; rebuild it.
            logger.warning("the lexical index of %r was made for another collection of that name", self.name)
            remove_index(self.folder)
            return open_index(self.folder, engine=self.asked["engine"], analyzer=self.asked["analyzer"])

    def _fail_to_open(self, error: BaseException) -> None:
        self.error = error
        logger.warning(
            "the lexical index of %r cannot be opened (%s): dense queries work, lexical and hybrid ones "
            "will say why they cannot",
            self.name,
            error,
        )

    def _repair(self, collection: Collection, *, building: bool = False) -> Repair:
        """Bring the index in step with Chroma (pending ids, then every id if the counts differ).

        A repair that changed something says so in one warning; a first build (``building``) is no repair.
        """
        assert self.index is not None
        total = collection.count()
        result = repair(
            self.index,
            total,
            lambda: _ids(collection),
            lambda ids: stored_documents(collection, ids),
            show_progress=wants_progress(None, abs(total - self.index.count())),
        )
        if result.changed and not building:
            logger.warning(
                "the lexical index of %r was out of step with Chroma (a writer stopped between its two "
                "writes?) and was repaired from Chroma's documents: %d re-indexed, %d removed",
                self.name,
                result.added,
                result.deleted,
            )
        return result

    # -- searching ----------------------------------------------------------------------------------

    def for_search(self, client: ClientAPI, collection: Collection) -> LexicalIndex:
        """The index to search, built now from Chroma if the collection has none yet."""
        index = self.index
        if index is not None:
            return index
        if self.folder is None:
            raise LexicalUnavailableError(
                f"collection {self.name!r} is on a Chroma server, and its lexical index needs a folder "
                "on this machine: pass lexical_path=DIR to QZhouCollection.open (--lexical-dir DIR on "
                "the command line) to keep one there, built from the server's documents on first use"
            )
        if self.error is not None:
            raise LexicalUnavailableError(
                f"lexical and hybrid search on collection {self.name!r} need its lexical index in "
                f"{self.folder}, which cannot be opened: {self.error}. Remove that folder to have it "
                "rebuilt from Chroma's documents on the next query."
            ) from self.error
        return self._build(client, collection)

    def _build(self, client: ClientAPI, collection: Collection) -> LexicalIndex:
        """Open (creating it if needed) and fill the index from Chroma, under the write lock.

        The write lock is taken before this side's own lock, in the order every write takes them.
        """
        try:
            with write_lock(client), self._lock:
                if self.index is not None:  # another thread of this process built it meanwhile
                    return self.index
                index = self._open_index(create=True)
                record_settings(collection, asdict(index.settings))
                self.index = index
                result = self._repair(collection, building=True)
        except Exception as error:  # a lexical failure never stops the dense use of a collection
            self.index = None
            self._fail_to_open(error)
            raise LexicalUnavailableError(
                f"the lexical index of collection {self.name!r} cannot be built in {self.folder}: {error}"
            ) from error
        logger.info("built the lexical index of %r: %d documents", self.name, result.added)
        return index

    # -- keeping it in step -------------------------------------------------------------------------

    def writable(self) -> LexicalIndex | None:
        """The index to keep in step with a write; one another process built meanwhile is opened."""
        with self._lock:
            folder = self.folder
            if self.index is None and self.error is None and folder and (folder / SETTINGS_FILE).is_file():
                try:
                    self.index = self._open_index(create=False)
                except Exception as error:  # a lexical failure never stops the dense use of a collection
                    self._fail_to_open(error)
            return self.index

    def mark(self, ids: list[str]) -> None:
        """Before a Chroma write: ``ids`` are about to change."""
        self._write("mark", ids, lambda index: index.mark_pending(ids))

    def added(self, ids: list[str], texts: list[str | None]) -> None:
        """After a Chroma add or upsert: the texts of ``ids`` (a record without a document as '')."""
        self._write("add", ids, lambda index: index.add(ids, [text or "" for text in texts]))

    def deleted(self, ids: list[str]) -> None:
        """After a Chroma delete."""
        self._write("delete", ids, lambda index: index.delete(ids))

    def _write(self, what: str, ids: list[str], action: Any) -> None:
        index = self.writable()
        if index is None or not ids:
            return
        try:
            action(index)
        except Exception as error:  # a lexical failure must never undo or stop a Chroma write
            self._after_a_failed_write(what, error)

    def _after_a_failed_write(self, what: str, error: BaseException) -> None:
        assert self.marker is not None
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
        except OSError as marker_error:
            logger.error("the rebuild marker %s cannot be written either: %s", self.marker, marker_error)
        logger.error(
            "the lexical index of %r missed a write (%s: %s); Chroma holds the change, and the lexical index "
            "is rebuilt from Chroma after the collection is next opened",
            self.name,
            what,
            error,
        )

    # -- removing -----------------------------------------------------------------------------------

    def remove(self) -> None:
        """Delete the index folder and its marker (the collection is being deleted)."""
        with self._lock:
            if self.index is not None:
                self.index.close()
                self.index = None
            if self.folder is not None:
                remove_index(self.folder)
                assert self.marker is not None
                self.marker.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self.index is not None:
                self.index.close()
                self.index = None


def _ids(collection: Collection) -> Iterator[str]:
    for found in pages(collection, []):
        yield from found["ids"]
