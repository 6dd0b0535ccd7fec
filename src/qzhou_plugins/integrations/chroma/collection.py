"""A Chroma collection that cannot be corrupted by a model change or lose work to a crash.

The safe path is the default one:

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
  same skipping of stored ids and the same fingerprint check (:mod:`.precomputed`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from tqdm.auto import tqdm

from ...encoder import Encoder, wants_progress
from ...instructions import TaskLike, TaskType
from ...validation import as_list, check_count
from . import migration, precomputed
from .embedding_function import QZhouEmbeddingFunction
from .opening import (
    CollectionNotFoundError,
    check_name,
    connect,
    create_collection,
    existing_collection,
    new_function,
    reopen_collection,
)
from .query import QueryResult, nearest, reranked, result_counts
from .records import record_batches
from .writing import AddResult, write_batch

logger = logging.getLogger("qzhou_plugins")


class QZhouCollection:
    """A Chroma collection whose vectors all come from one recorded embedding setup.

    Get one with :meth:`open`. ``collection`` is the raw :class:`chromadb.Collection` (its persisted
    embedding function is a :class:`~qzhou_plugins.chroma.QZhouEmbeddingFunction`, so plain Chroma,
    LangChain or LlamaIndex code can read it too) and ``encoder`` the shared encoder.
    """

    def __init__(
        self, client: ClientAPI, collection: Collection, embedding_function: QZhouEmbeddingFunction
    ) -> None:
        self.client = client
        self.collection = collection
        self.embedding_function = embedding_function

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

    # -- opening ------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        *,
        path: str | os.PathLike[str] | None = None,
        client: ClientAPI | None = None,
        model: str | None = None,
        task: TaskLike = None,
        create: bool = True,
        **encoder_options: Any,
    ) -> QZhouCollection:
        """Open (or create) collection ``name``, refusing it if it was built another way.

        ``path`` is the folder of an embedded database (:data:`DEFAULT_PATH` when neither it nor a
        ``client`` is given). ``model=None`` and ``task=None`` mean "as recorded in the collection"
        for an existing one (:data:`~qzhou_plugins.DEFAULT_MODEL` and the model's default task for a
        new one); so do vector-changing ``encoder_options`` (max_length, normalize, dtype, pooling,
        bidirectional) left out while the model stays the same. Machine options (device,
        batch_tokens, ...) are never recorded.
        """
        name = check_name(name)
        if "model" in encoder_options:
            raise TypeError("model is given once, as the model argument")
        client = connect(path, client)
        existing = existing_collection(client, name)
        if existing is not None:
            return cls(client, *reopen_collection(client, existing, model, task, encoder_options))
        if not create:
            raise CollectionNotFoundError(
                f"no collection named {name!r} in this Chroma database; create it with "
                f"QZhouCollection.open({name!r}) (create=True is the default)"
            )
        return cls(client, *create_collection(client, name, new_function(model, task, encoder_options)))

    @classmethod
    def open_precomputed(
        cls,
        name: str,
        output: str | os.PathLike[str],
        *,
        path: str | os.PathLike[str] | None = None,
        client: ClientAPI | None = None,
        create: bool = True,
    ) -> QZhouCollection:
        """Open (or create) collection ``name`` for the vectors of a finished bulk ``output``.

        The model, options and exact query and document prefixes are the ones the output records, so
        no ``model`` or ``task`` is asked for. An existing collection built another way (model,
        dimension, prefixes, pooling, normalisation, length) is refused, saying what differs; an
        output of query-side vectors is refused. No model is loaded until one is needed (a query).
        Then call :meth:`add_precomputed`.
        """
        name = check_name(name)
        client = connect(path, client)
        return cls(client, *precomputed.open_for_output(client, name, output, create=create))

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
        """
        batch_size = self._batch_size(batch_size)
        total = len(texts) if isinstance(texts, Sized) else None
        show = wants_progress(show_progress, total, self.encoder.config.show_progress)
        result = AddResult(added=0, skipped=0)
        with tqdm(total=total, unit="text", desc=f"Adding to {self.name}", disable=not show) as progress:
            for batch in record_batches(texts, metadatas, ids, batch_size):
                result += write_batch(self.client, self.collection, batch, self._embed_documents)
                progress.update(len(batch))
        self._warn_conflicts(result)
        return result

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
        batch_size = self._batch_size(batch_size)
        result = precomputed.add_output(self.client, self.collection, output, batch_size, show_progress)
        self._warn_conflicts(result)
        return result

    def _batch_size(self, batch_size: int) -> int:
        """A positive ``batch_size``, at most what one Chroma write takes."""
        try:
            check_count(batch_size, what="batch_size", allow_none=False, minimum=1)
        except (TypeError, ValueError):
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}") from None
        return min(batch_size, self.client.get_max_batch_size())

    def _warn_conflicts(self, result: AddResult) -> None:
        if result.conflicts:
            logger.warning(
                "%d ids were already in %r with a different document and were left unchanged (first: %s); "
                "delete them first or give new ids to store the new texts.",
                len(result.conflicts),
                self.name,
                ", ".join(result.conflicts[:5]),
            )

    def _embed_documents(self, texts: list[str]) -> Any:
        return self.embedding_function.embed_documents(texts, show_progress=False)

    # -- reading ------------------------------------------------------------------------------------

    def count(self) -> int:
        return self.collection.count()

    def query(
        self,
        texts: str | Sequence[str],
        *,
        n_results: int = 10,
        where: Mapping[str, Any] | None = None,
        rerank_candidates: int | None = None,
        where_document: Mapping[str, Any] | None = None,
        rerank_task: TaskLike = TaskType.RERANKING,
        rerank: int | None = None,
    ) -> list[QueryResult]:
        """The nearest documents of each query text (query side of the collection's task).

        ``rerank_candidates=N`` takes the ``max(N, n_results)`` nearest candidates from the index,
        rescores them with the shared model for ``rerank_task`` (:mod:`qzhou_plugins.rerank`: one
        pass over the instructed query and the candidates) and returns the best ``n_results`` by
        that score. Each hit keeps its index distance; its ``score`` is then the rerank score.
        ``rerank`` is the deprecated former name of ``rerank_candidates``.
        """
        queries = as_list([texts] if isinstance(texts, str) else texts, what="query texts")
        n_results, candidates = result_counts(n_results, rerank_candidates, rerank)
        if not queries:
            return []
        fetch = n_results if candidates is None else max(candidates, n_results)
        vectors = self.embedding_function.embed_queries(queries)  # validates them, naming positions
        results = nearest(self.collection, vectors, queries, fetch, where, where_document)
        if candidates is None:
            return results
        return [reranked(self.encoder, result, n_results, rerank_task) for result in results]

    # -- migrating ----------------------------------------------------------------------------------

    def reembed(
        self,
        *,
        model: str | None = None,
        task: TaskLike = None,
        new_name: str | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
        **encoder_options: Any,
    ) -> QZhouCollection:
        """Embed every stored document again with another model or task, without risking the original.

        ``model=None`` / ``task=None`` keep the current ones (and, for the same model, its recorded
        options). With ``new_name`` the result is a new collection and this one is left as it is.
        Without it the records are copied into a staging collection (named after the new setup, so
        an interrupted run resumes), checked to hold every id, and only then swapped in: this one is
        renamed aside, the staging one takes its name, and the old one is deleted last; this object
        (which is returned) then stands for the new collection.
        """
        if new_name == self.name:
            raise ValueError(f"new_name is the current name {self.name!r}; leave it out to re-embed in place")
        if new_name is not None:
            check_name(new_name)
        setup = migration.plan(self.embedding_function, model, task, encoder_options)
        migration.check_documents_stored(self.collection)
        target_name = new_name if new_name is not None else migration.staging_name(self.name, setup)
        target = QZhouCollection.open(
            target_name, client=self.client, model=setup.model, task=setup.task, **setup.options
        )
        show = wants_progress(show_progress, self.count(), self.encoder.config.show_progress)
        migration.copy_records(self.collection, target.collection, target.add, batch_size, show)
        if new_name is not None:
            return target
        migration.swap_in(self.client, self.collection, target.collection, target.model)
        # This object now stands for the new collection too, so that no caller keeps a stale one.
        self.collection, self.embedding_function = target.collection, target.embedding_function
        return self

    def __repr__(self) -> str:
        return f"QZhouCollection(name={self.name!r}, model={self.model!r})"
