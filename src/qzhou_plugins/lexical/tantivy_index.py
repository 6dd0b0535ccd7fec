"""The engine for large corpora: tantivy (the ``tantivy`` extra), BM25 computed natively in Rust.

In the index's folder: ``tantivy/``, tantivy's own files, with two fields: ``id`` (raw, stored and
indexed, for replacing and deleting by id) and ``terms`` (the analyzed terms, space-joined and split
back by tantivy's whitespace tokenizer, exactly as they were made; frequencies indexed, no
positions, since no phrase is ever searched); and ``journal.sqlite3``, the pending ids.

Each add or delete is one tantivy commit (atomic): a writer is taken for it and released after,
waiting for the merges it started, so other processes can write in turn (a writer of another process
is waited for up to :data:`BUSY_TIMEOUT_S`). A commit costs about 0.1 s whatever its size (tantivy
writes and syncs a new segment), so large adds are much cheaper per document than small ones. The
writer has one thread: the analysis, in Python, is the slower part, and each writer thread would
make a segment of its own on every commit. Only ids the index holds are deleted before an add:
tantivy applies each delete to every segment at commit time.

Ranking is tantivy's own BM25 with its compiled-in k1 = 1.2 and b = 0.75;
:mod:`qzhou_plugins.lexical.bm25` says how its scores differ from the exact ones of the FTS5 engine.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import journal
from .analyzers import analyzer
from .base import LexicalHit, checked_documents, checked_ids
from .bm25 import check_query, query_terms
from .folder import remove_index
from .settings import LexicalIndexError, LexicalSettings

BUSY_TIMEOUT_S = 60.0
WRITER_HEAP_BYTES = 128_000_000
"""Memory for the writer: fewer, larger segments when building."""
_TOKENIZER = "qzhou_terms"


def import_tantivy() -> Any:
    """The tantivy module, or an ImportError that names the extra."""
    try:
        import tantivy
    except ImportError:
        raise ImportError(
            "the tantivy lexical engine needs tantivy: pip install 'qzhou-plugins[tantivy]'"
        ) from None
    return tantivy


class TantivyIndex:
    """A lexical index in tantivy's files; see the module for the layout. Thread-safe."""

    def __init__(self, path: Path, settings: LexicalSettings) -> None:
        self.path = path
        self.settings = settings
        self._analyze = analyzer(settings.analyzer)
        self._tantivy = import_tantivy()
        self._lock = threading.RLock()
        self._live: Any = self._open_index(path / "tantivy")
        self._journal: sqlite3.Connection | None = sqlite3.connect(
            path / "journal.sqlite3", timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._journal.execute(journal.SCHEMA)

    def _open_index(self, folder: Path) -> Any:
        tantivy = self._tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
        builder.add_text_field("terms", tokenizer_name=_TOKENIZER, index_option="freq")
        folder.mkdir(exist_ok=True)
        try:
            index = tantivy.Index(builder.build(), path=str(folder), reuse=True)
        except (OSError, ValueError) as error:
            raise LexicalIndexError(f"the tantivy index in {folder} cannot be opened: {error}") from None
        whitespace = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build()
        index.register_tokenizer(_TOKENIZER, whitespace)
        return index

    @property
    def _index(self) -> Any:
        if self._live is None:
            raise LexicalIndexError(f"the lexical index in {self.path} is closed")
        return self._live

    # -- writing ------------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        ids, texts = checked_documents(ids, texts)
        if not ids:
            return
        documents = [
            self._tantivy.Document(id=id_, terms=" ".join(self._analyze(text)))
            for id_, text in zip(ids, texts, strict=True)
        ]

        def write(writer: Any) -> None:
            # Read once this writer holds the index: another process's adds are committed by then.
            for id_ in self._held(ids):  # a delete costs at commit: only for ids to replace
                writer.delete_documents_by_term("id", id_)  # applies to documents added before it
            for document in documents:
                writer.add_document(document)

        self._commit(write, ids)

    def delete(self, ids: Iterable[str]) -> int:
        ids = checked_ids(ids)
        held: list[str] = []

        def write(writer: Any) -> None:
            held.extend(self._held(ids))
            for id_ in held:
                writer.delete_documents_by_term("id", id_)

        self._commit(write, ids)
        return len(held)

    def mark_pending(self, ids: Iterable[str]) -> None:
        ids = checked_ids(ids)
        with self._lock, self._journal_transaction() as db:
            journal.mark(db, ids)

    def _commit(self, write: Callable[[Any], None], ids: list[str]) -> None:
        """Run ``write`` on a writer and commit it (all or nothing), then clear the ids' pending marks."""
        with self._lock:
            writer = self._writer()
            try:
                write(writer)
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            finally:
                writer.wait_merging_threads()  # releases the writer's lock on the index
            with self._journal_transaction() as db:
                journal.clear(db, ids)

    def _writer(self) -> Any:
        """This index's writer, waiting while another process holds it."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
            except ValueError as error:
                if "LockBusy" not in str(error) or time.monotonic() > deadline:
                    raise LexicalIndexError(
                        f"the tantivy index in {self.path} cannot be written: {error}"
                    ) from None
            time.sleep(0.05)

    # -- reading ------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[LexicalHit]:
        k = check_query(query, k)
        terms = query_terms(self._analyze(query))
        if not terms:
            return []
        tantivy = self._tantivy
        schema = self._index.schema
        clauses = []
        for term, repeats in terms.items():
            clause = tantivy.Query.term_query(schema, "terms", term, index_option="freq")
            clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(clause, float(repeats))))
        searcher = self._searcher()
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit=k, count=False).hits
        return [LexicalHit(searcher.doc(address)["id"][0], float(score)) for score, address in hits]

    def _held(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` the index holds now (deleted documents not counted), each once."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        searcher = self._searcher()
        query = self._tantivy.Query.term_set_query(self._index.schema, "id", wanted)
        hits = searcher.search(query, limit=len(wanted), count=False).hits
        return [searcher.doc(address)["id"][0] for _, address in hits]

    def count(self) -> int:
        return int(self._searcher().num_docs)

    def ids(self) -> Iterator[str]:
        searcher = self._searcher()
        if not searcher.num_docs:
            return iter([])
        hits = searcher.search(self._tantivy.Query.all_query(), limit=searcher.num_docs, count=False).hits
        return iter([searcher.doc(address)["id"][0] for _, address in hits])

    def _searcher(self) -> Any:
        """A searcher of the last commit, this process's or another's (a reload costs microseconds)."""
        index = self._index
        index.reload()
        return index.searcher()

    def pending(self) -> list[str]:
        with self._lock, self._journal_transaction() as db:
            return journal.pending(db)

    # -- closing ------------------------------------------------------------------------------------

    def _journal_transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return journal.transaction(self._journal, self.path)

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self._live = None

    def remove(self) -> None:
        self.close()
        remove_index(self.path)

    def __enter__(self) -> TantivyIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TantivyIndex({str(self.path)!r}, analyzer={self.settings.analyzer!r})"
