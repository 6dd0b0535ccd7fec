"""A Chroma collection that cannot be corrupted by a model change or lose work to a crash; the safe
path is the default one:

- opening checks the collection's recorded embedding function (model, dimension, exact query and
  document prefixes, pooling, normalisation) against what is asked for, and refuses a mismatch
  before anything is written, saying what differs and how to proceed (:mod:`.opening`);
- ids default to a hash of the text and its metadata, and ids already present are skipped without
  being re-embedded, so an ingestion killed half-way resumes on rerun with nothing lost or doubled;
- every record is validated, once, before it is embedded or written (:mod:`.records`), and the
  counts of what was added stay honest when several processes add at once (:mod:`.writing`);
- migrating to another model or instruction set is an explicit :meth:`QZhouCollection.reembed`
  into a separate collection, swapped in only once it is complete (:mod:`.migration`);
- vectors embedded in bulk elsewhere (``qzhou-plugins embed``) are loaded as they are, with the
  same skipping of stored ids and the same fingerprint check (:mod:`.precomputed`);
- a lexical (BM25) index is kept beside the collection, in step with every write and repaired from
  Chroma after a crash (:mod:`.lexical_side`), for lexical and hybrid queries (:mod:`.hybrid`);
- :meth:`QZhouCollection.sync` keeps it equal to a fresh index of files, killed or not (:mod:`.syncing`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from ...documents import CHUNK_OVERLAP, CHUNK_SIZE
from ...documents.record import ChunkSettings
from ...encoder import Encoder, wants_progress
from ...instructions import TaskLike
from ...lexical.base import LexicalIndex
from ...validation import as_list
from . import migration, precomputed, syncing
from .changing import UpsertResult, delete_records, remove_collection, upsert_batch
from .embedding_function import QZhouEmbeddingFunction
from .hybrid import search
from .lexical_record import check_choice, lexical_root
from .lexical_side import LexicalSide
from .opening import check_name, connect, open_or_create
from .query import QueryResult, reranked
from .query_options import QueryOptions
from .records import Record
from .syncing import SyncSummary
from .writing import AddResult, checked_batch_size, progress_batches, warn_conflicts, write_batch

logger = logging.getLogger("qzhou_plugins")


class QZhouCollection:
    """A Chroma collection whose vectors all come from one recorded embedding setup.

    Get one with :meth:`open`. ``collection`` is the raw :class:`chromadb.Collection` (its persisted
    embedding function is a :class:`~qzhou_plugins.chroma.QZhouEmbeddingFunction`, so plain Chroma,
    LangChain or LlamaIndex code can read it too) and ``encoder`` the shared encoder. Write to it through
    this helper (:meth:`add`, :meth:`upsert`, :meth:`delete`, ...): plain Chroma writes do not reach
    its lexical index, which then notices only a changed count, when the collection is next opened.
    """

    def __init__(
        self,
        client: ClientAPI,
        collection: Collection,
        embedding_function: QZhouEmbeddingFunction,
        lexical: LexicalSide | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.embedding_function = embedding_function
        self.lexical = lexical if lexical is not None else LexicalSide(None, collection.name, {})

    @property
    def encoder(self) -> Encoder:
        """The shared encoder, loaded on first use (loading precomputed vectors needs no model)."""
        return self.embedding_function.encoder

    @property
    def name(self) -> str:
        return self.collection.name

    @property
    def model(self) -> str:
        return self.embedding_function.model

    @property
    def task(self) -> TaskLike:
        return self.embedding_function.task

    @property
    def analyzer(self) -> str:
        """The analyzer of the lexical index: ``"english"``, ``"chinese"`` or ``"auto"``."""
        return self.lexical.settings()["analyzer"]

    @property
    def lexical_engine(self) -> str:
        """The engine of the lexical index: ``"fts5"`` or ``"tantivy"``."""
        return self.lexical.settings()["engine"]

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        client: ClientAPI | None = None,
        model: str | os.PathLike[str] | None = None,
        task: TaskLike = None,
        create: bool = True,
        analyzer: str | None = None,
        lexical_engine: str | None = None,
        lexical_path: str | os.PathLike[str] | None = None,
        **encoder_options: Any,
    ) -> QZhouCollection:
        """Open (or create) collection ``name``, refusing it if it was built another way.

        ``path`` is the folder of an embedded database (:data:`DEFAULT_PATH` when neither it nor a
        ``client`` is given). ``model=None`` and ``task=None`` mean "as recorded in the collection"
        for an existing one (:data:`~qzhou_plugins.DEFAULT_MODEL` and the model's default task for a
        new one); so do vector-changing ``encoder_options`` (max_length, normalize, dtype, pooling,
        bidirectional, family, dimensions) left out while the model stays the same. Machine options (device,
        batch_tokens, ...) are never recorded.

        The lexical index (``query(mode="lexical" | "hybrid")``) is made with ``analyzer``
        (``"english"``, the default, ``"chinese"``, ``"auto"``) and ``lexical_engine`` (``"fts5"``, the
        default, or ``"tantivy"``), recorded like the model (None: as recorded; another value is
        refused), and kept in ``lexical_path`` (default: ``qzhou-lexical`` in an embedded database's
        folder; a Chroma server's collection needs one). Opening repairs it after a crash.
        """
        name = check_name(name)
        if "model" in encoder_options:
            raise TypeError("model is given once, as the model argument")
        check_choice(analyzer, lexical_engine)
        client = connect(path, client)
        root = lexical_root(client, lexical_path)  # a bad lexical_path is refused before anything is made
        collection, function = open_or_create(client, name, model, task, encoder_options, create=create,
                                              lexical=(analyzer, lexical_engine))  # fmt: skip
        side = LexicalSide.opened(client, collection, root, analyzer, lexical_engine)
        return cls(client, collection, function, side)

    @classmethod
    def open_precomputed(
        cls,
        name: str,
        output: str | os.PathLike[str],
        *,
        path: str | os.PathLike[str] | None = None,
        client: ClientAPI | None = None,
        create: bool = True,
        analyzer: str | None = None,
        lexical_engine: str | None = None,
        lexical_path: str | os.PathLike[str] | None = None,
    ) -> QZhouCollection:
        """Open (or create) collection ``name`` for the vectors of a finished bulk ``output``.

        The model, options and exact query and document prefixes are the ones the output records, so
        no ``model`` or ``task`` is asked for. An existing collection built another way (model,
        family, dimension, prefixes, pooling, normalisation, length) is refused, saying what differs; an
        output of query-side vectors is refused. No model is loaded until one is needed (a query).
        The lexical options are those of :meth:`open`. Then call :meth:`add_precomputed`.
        """
        name = check_name(name)
        check_choice(analyzer, lexical_engine)
        client = connect(path, client)
        root = lexical_root(client, lexical_path)
        lexical = (analyzer, lexical_engine)
        collection, function = precomputed.open_for_output(
            client, name, output, create=create, lexical=lexical
        )
        return cls(client, collection, function, LexicalSide.opened(client, collection, root, *lexical))

    @classmethod
    def delete_collection(
        cls,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        client: ClientAPI | None = None,
        lexical_path: str | os.PathLike[str] | None = None,
    ) -> bool:
        """Delete collection ``name`` with its lexical index; False if there was no such collection.

        ``path``, ``client`` and ``lexical_path`` say where, as for :meth:`open`. The lexical index is
        removed even when the collection is already gone (deleted with plain Chroma).
        """
        client = connect(path, client)
        return remove_collection(client, check_name(name), lexical_root(client, lexical_path))

    # -- writing ------------------------------------------------------------------------------------

    def add(
        self,
        texts: Iterable[str],
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        ids: Iterable[str] | None = None,
        *,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> AddResult:
        """Embed and store texts in batches; ids already present are skipped without re-embedding.

        Lists (any ``Sequence``) are validated whole before the first write. Other iterables are
        streamed: each batch is validated before it is written, and a problem found later stops
        the call with the earlier batches stored; fixing the input and rerunning adds only the rest.
        To replace what an id holds, use :meth:`upsert`.
        """
        result = AddResult(added=0, skipped=0)
        for batch in self._batches(texts, metadatas, ids, batch_size, show_progress, "Adding to"):
            result += write_batch(self.client, self.collection, batch, self._embed_documents, self.lexical)
        warn_conflicts(self.name, result)
        return result

    def upsert(
        self,
        texts: Iterable[str],
        *,
        ids: Iterable[str],
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
    ) -> UpsertResult:
        """Store each text under its id, replacing the text, vector and metadata of an id already there.

        The metadata given replaces the stored one (keys left out are removed; ``None`` or no
        ``metadatas`` leaves a record with none). Records whose stored text and metadata are already
        the ones given are left as they are, not embedded again. Validated as :meth:`add` validates;
        the lexical index is kept in step.
        """
        if ids is None:
            raise TypeError("upsert needs ids=, which say the records to replace (add makes ids from texts)")
        result = UpsertResult(added=0, updated=0)
        for batch in self._batches(texts, metadatas, ids, batch_size, show_progress, "Upserting into"):
            result += upsert_batch(self.client, self.collection, batch, self._embed_documents, self.lexical)
        return result

    def delete(
        self,
        ids: Iterable[str] | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete the records of ``ids`` and/or those matching the filters; returns how many were deleted.

        With several given, a record must satisfy all of them. The lexical index is kept in step. To
        delete the whole collection, use :meth:`delete_collection`."""
        return delete_records(self.client, self.collection, ids, where, where_document, self.lexical)

    def sync(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        chunk_size: int = CHUNK_SIZE,
        chunk_overlap: int = CHUNK_OVERLAP,
        keep_missing: bool = False,
        dry_run: bool = False,
        skip_unreadable: bool = False,
        show_progress: bool | None = None,
    ) -> SyncSummary:
        """Make the collection hold what a fresh index of ``paths`` would: unchanged files neither read
        nor embedded, changed ones replaced, those gone from a folder given removed (unless
        ``keep_missing``); ``dry_run`` only says so. An unreadable file stops it before any write,
        unless ``skip_unreadable`` (read again next time). See :mod:`.syncing`."""
        settings = ChunkSettings(chunk_size, chunk_overlap)
        return syncing.sync(self, paths, settings, keep_missing, dry_run, skip_unreadable, show_progress)

    def add_precomputed(
        self,
        output: str | os.PathLike[str],
        *,
        batch_size: int = precomputed.DEFAULT_LOAD_BATCH,
        show_progress: bool | None = None,
    ) -> AddResult:
        """Store the vectors of a finished bulk ``output`` as they are: no model runs for them.

        The output's ids become the ids here, so ids already stored are skipped (a rerun adds
        nothing, an interrupted load resumes, and a later :meth:`add` of the same texts with the same
        ids is skipped). Its texts become the documents if it kept them (``embed --with-text``);
        otherwise the records have no document. The output is streamed ``batch_size`` vectors at a
        time and refused, before anything is written, if its vectors are not comparable with this
        collection's (see :meth:`open_precomputed`).
        """
        batch_size = checked_batch_size(self.client, batch_size)
        result = precomputed.add_output(
            self.client, self.collection, output, batch_size, show_progress, self.lexical
        )
        warn_conflicts(self.name, result)
        return result

    def _batches(
        self, texts: Any, metadatas: Any, ids: Any, batch_size: int, show_progress: bool | None, verb: str
    ) -> Iterator[list[Record]]:
        label, configured = f"{verb} {self.name}", lambda: self.encoder.config.show_progress
        return progress_batches(
            self.client, label, (texts, metadatas, ids), batch_size, show_progress, configured
        )

    def _embed_documents(self, texts: list[str]) -> Any:
        return self.embedding_function.embed_documents(texts, show_progress=False)

    # -- reading ------------------------------------------------------------------------------------

    def count(self) -> int:
        return self.collection.count()

    def lexical_index(self) -> LexicalIndex:
        """The lexical index (built now from Chroma's documents if the collection has none yet).

        Raises :class:`LexicalUnavailableError`, saying why and how to fix it, if it cannot be used.
        """
        return self.lexical.for_search(self.client, self.collection)

    def query(
        self, texts: str | Sequence[str], options: QueryOptions | None = None, **settings: Any
    ) -> list[QueryResult]:
        """The best documents of each query text, by meaning (dense), by words (lexical) or by both.

        The options are those of :class:`~qzhou_plugins.chroma.QueryOptions`, given as keywords
        (``query("tea", n_results=5, mode="hybrid", rerank_candidates=50, reranker="ms-marco")``), as
        one ``QueryOptions``, or both (the keywords replace its values). ``mode="dense"`` (the default)
        ranks by the nearest vectors (query side of the collection's task), ``"lexical"`` by BM25 over
        the lexical index, ``"hybrid"`` by both sides fused; ``where`` and ``where_document`` hold in
        every mode. ``rerank_candidates=N`` rescores the best N with ``reranker`` (default: the
        collection's own model). Each hit keeps its dense, lexical and fused scores, the side(s) that
        found it and the scale of its ``score`` (:class:`Hit`).
        """
        queries = as_list([texts] if isinstance(texts, str) else texts, what="query texts")
        options = QueryOptions.of(options, settings)
        if not queries:
            return []
        embed = self.embedding_function.embed_queries
        filters = (options.where, options.where_document)
        results = search(self.collection, embed, self.lexical_index, queries, options.fetch, filters, options)
        if options.rerank_candidates is None:
            return results
        reranker = options.scorer(self.encoder)
        return [
            reranked(reranker, result, options.n_results, options.rerank_task, options.rerank_instruction)
            for result in results
        ]

    # -- migrating ----------------------------------------------------------------------------------

    def reembed(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        task: TaskLike = None,
        new_name: str | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
        **encoder_options: Any,
    ) -> QZhouCollection:
        """Embed every stored document again with another model or task, without risking the original.

        ``model=None`` / ``task=None`` keep the current ones (and, for the same model, its recorded
        options). With ``new_name`` the result is a new collection (with a lexical index of its own,
        made with this one's analyzer and engine) and this one is left as it is. Without it the records
        are copied into a staging collection (named after the new setup, so an interrupted run
        resumes), checked to hold every id, and only then swapped in: this one is renamed aside, the
        staging one takes its name, and the old one is deleted last; this object (which is returned)
        then stands for the new collection. The texts do not change, so neither does the lexical index.
        """
        if new_name == self.name:
            raise ValueError(f"new_name is the current name {self.name!r}; leave it out to re-embed in place")
        if new_name is not None:
            check_name(new_name)
        setup = migration.plan(self.embedding_function, model, task, encoder_options)
        migration.check_documents_stored(self.collection)
        target = self._target(
            new_name if new_name is not None else migration.staging_name(self.name, setup),
            setup,
            lexical=new_name is not None,
        )
        show = wants_progress(show_progress, self.count(), self.encoder.config.show_progress)
        migration.copy_records(self.collection, target.collection, target.add, batch_size, show)
        if new_name is not None:
            return target
        migration.swap_in(self.client, self.collection, target.collection, target.model)
        # This object now stands for the new collection too, so that no caller keeps a stale one.
        self.collection, self.embedding_function = target.collection, target.embedding_function
        return self

    def _target(self, name: str, setup: migration.Plan, *, lexical: bool) -> QZhouCollection:
        """A new collection with a lexical index (``lexical``), or a staging one without (texts unchanged)."""
        settings = self.lexical.settings()
        collection, function = open_or_create(
            self.client, name, setup.model, setup.task, setup.options, create=True,
            lexical=(settings["analyzer"], settings["engine"]),
        )  # fmt: skip
        root = self.lexical.root if lexical else None
        side = LexicalSide.opened(self.client, collection, root, settings["analyzer"], settings["engine"])
        return QZhouCollection(self.client, collection, function, side)

    def __repr__(self) -> str:
        return f"QZhouCollection(name={self.name!r}, model={self.model!r})"
