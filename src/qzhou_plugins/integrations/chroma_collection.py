"""A Chroma collection that cannot be corrupted by a model change or lose work to a crash.

The safe path is the default one:

- opening checks the collection's recorded embedding function (model, dimension, exact query and
  document prefixes, pooling, normalisation) against what is asked for, and refuses a mismatch
  before anything is written, saying what differs and how to proceed;
- ids default to a hash of the text and its metadata, and ids already present are skipped without
  being re-embedded, so an ingestion killed half-way resumes on rerun with nothing lost or doubled;
- every batch is validated before it is embedded or written;
- migrating to another model or instruction set is an explicit :meth:`QZhouCollection.reembed`
  into a separate collection, swapped in only once it is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from tqdm.auto import tqdm

try:
    import chromadb
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import validate_metadata
    from chromadb.errors import NotFoundError
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("qzhou_plugins.chroma needs chromadb: pip install 'qzhou-plugins[chroma]'") from error

from ..config import DEFAULT_MODEL
from ..encoder import PROGRESS_THRESHOLD, Encoder
from ..validation import validate_texts
from ..instructions import TaskLike, TaskType
from ..rerank import score_candidates
from .chroma import (
    EMBEDDING_FUNCTION_NAME,
    PERSISTED_OPTIONS,
    QZhouEmbeddingFunction,
    fingerprint,
    fingerprint_differences,
    same_model,
    task_from_config,
)

logger = logging.getLogger("qzhou_plugins")

FINGERPRINT_METADATA_KEY = "qzhou:fingerprint"
"""Collection metadata key of the fingerprint (model, dimension, prefixes, ...) written at creation."""

DEFAULT_PATH = "./chroma"
"""Where :meth:`QZhouCollection.open` keeps an embedded database when given neither path nor client."""

_MISSING = object()


class CollectionMismatchError(ValueError):
    """The collection was built with another model, dimension or instruction set."""


class CollectionNotFoundError(LookupError):
    """``open(..., create=False)`` on a collection that does not exist."""


@dataclass(frozen=True)
class AddResult:
    """What :meth:`QZhouCollection.add` did.

    ``skipped`` counts records whose id was already present (or repeated within the call): they were
    not re-embedded. ``conflicts`` lists the skipped ids whose stored document differs from the one
    given, the only case where a skip leaves the caller's text out of the collection.
    """

    added: int
    skipped: int
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is the relevance (cosine), or the rerank score when reranked."""

    id: str
    document: str
    metadata: dict[str, Any]
    distance: float
    score: float


@dataclass(frozen=True)
class QueryResult:
    query: str
    hits: list[Hit] = field(default_factory=list)


def content_id(text: str, metadata: Mapping[str, Any] | None) -> str:
    """The default id: a hash of the text and its metadata, so that re-adding the same record is a no-op.

    The metadata takes part so that one text from two sources stays two records.
    """
    canonical = json.dumps([text, dict(metadata or {})], sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


class QZhouCollection:
    """A Chroma collection whose vectors all come from one recorded embedding setup.

    Get one with :meth:`open`. ``collection`` is the raw :class:`chromadb.Collection` (its persisted
    embedding function is a :class:`~qzhou_plugins.integrations.chroma.QZhouEmbeddingFunction`, so
    plain Chroma, LangChain or LlamaIndex code can read it too) and ``encoder`` the shared encoder.
    """

    def __init__(
        self, client: ClientAPI, collection: Collection, embedding_function: QZhouEmbeddingFunction
    ) -> None:
        self.client = client
        self.collection = collection
        self.embedding_function = embedding_function
        self.encoder: Encoder = embedding_function.encoder

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

        ``model=None`` and ``task=None`` mean "as recorded in the collection" for an existing one
        (:data:`~qzhou_plugins.DEFAULT_MODEL` and the model's default task for a new one); so do
        vector-changing ``encoder_options`` (max_length, normalize, dtype, pooling, bidirectional)
        left out while the model stays the same. Machine options (device, batch_tokens, ...) are
        never recorded.
        """
        if path is not None and client is not None:
            raise TypeError("pass either path (an embedded database) or client, not both")
        if "model" in encoder_options:
            raise TypeError("model is given once, as the model argument")
        if client is None:
            client = chromadb.PersistentClient(path=os.fspath(path if path is not None else DEFAULT_PATH))
        existing = _get_collection(client, name)
        if existing is None:
            if not create:
                raise CollectionNotFoundError(
                    f"no collection named {name!r} in this Chroma database; create it with "
                    f"QZhouCollection.open({name!r}) (create=True is the default)"
                )
            encoder = Encoder.shared(model=model if model is not None else DEFAULT_MODEL, **encoder_options)
            function = QZhouEmbeddingFunction.from_encoder(encoder, task)
            collection = client.get_or_create_collection(
                name,
                embedding_function=function,  # type: ignore[arg-type]
                metadata={FINGERPRINT_METADATA_KEY: json.dumps(fingerprint(function.get_config()))},
            )
            # Another process may have created it first, with other settings: check what is there.
            _check_recorded(collection, function.get_config())
            return cls(client, collection, function)
        recorded = _recorded_config(existing)
        chosen_model = model if model is not None else recorded["model"]
        if not same_model(chosen_model, recorded["model"]):
            # Known to differ without loading anything (a 7B model takes minutes to load).
            raise _mismatch(name, fingerprint_differences(recorded, {**recorded, "model": chosen_model}))
        options = {key: recorded[key] for key in PERSISTED_OPTIONS if key in recorded}
        options.update(encoder_options)
        encoder = Encoder.shared(model=chosen_model, **options)
        if task is None:
            # Replay the recorded prefixes exactly: a newer release may word a task's instruction
            # differently, and the stored vectors were made with the old wording.
            prefixes = (recorded["query_prefix"], recorded["document_prefix"])
            function = QZhouEmbeddingFunction.from_encoder(
                encoder, task_from_config(recorded.get("task")), prefixes=prefixes
            )
        else:
            function = QZhouEmbeddingFunction.from_encoder(encoder, task)
        _check_recorded(existing, function.get_config())
        collection = client.get_collection(name, embedding_function=function)  # type: ignore[arg-type]
        return cls(client, collection, function)

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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        batch_size = min(batch_size, self.client.get_max_batch_size())
        if all(part is None or isinstance(part, Sequence) for part in (texts, metadatas, ids)):
            if not isinstance(texts, str):
                validate_texts(texts)  # positions named over the whole list
            for _ in _batches(texts, metadatas, ids, batch_size):
                pass  # a full validation pass: nothing is written unless every record is valid
        total = len(texts) if isinstance(texts, Sized) else None
        show = show_progress if show_progress is not None else self.encoder.config.show_progress
        if show is None:
            show = total is None or total >= PROGRESS_THRESHOLD
        added = skipped = 0
        conflicts: list[str] = []
        with tqdm(total=total, unit="text", desc=f"Adding to {self.name}", disable=not show) as progress:
            for batch in _batches(texts, metadatas, ids, batch_size):
                new, present = self._split_present(batch)
                conflicts += [
                    record.id for record in batch if present.get(record.id, record.text) != record.text
                ]
                if new:
                    texts_to_embed = [record.text for record in new]
                    vectors = self.embedding_function.embed_documents(texts_to_embed, show_progress=False)
                    metadata_list = [record.metadata for record in new]
                    self.collection.add(
                        ids=[record.id for record in new],
                        documents=[record.text for record in new],
                        metadatas=metadata_list if any(m is not None for m in metadata_list) else None,  # type: ignore[arg-type]
                        embeddings=vectors,
                    )
                added += len(new)
                skipped += len(batch) - len(new)
                progress.update(len(batch))
        if conflicts:
            logger.warning(
                "%d ids were already in %r with a different document and were left unchanged (first: %s); "
                "delete them first or give new ids to store the new texts.",
                len(conflicts),
                self.name,
                ", ".join(conflicts[:5]),
            )
        return AddResult(added=added, skipped=skipped, conflicts=tuple(conflicts))

    def _split_present(self, batch: list[_Record]) -> tuple[list[_Record], dict[str, str | None]]:
        """The records to embed (new ids, first occurrence) and the stored documents of the others."""
        unique_ids = list(dict.fromkeys(record.id for record in batch))
        found = self.collection.get(ids=unique_ids, include=["documents"])
        present = dict(zip(found["ids"], found["documents"] or [None] * len(found["ids"]), strict=True))
        new: dict[str, _Record] = {}
        for record in batch:
            if record.id not in present and record.id not in new:
                new[record.id] = record
        return list(new.values()), present

    # -- reading ------------------------------------------------------------------------------------

    def count(self) -> int:
        return self.collection.count()

    def query(
        self,
        texts: str | Sequence[str],
        *,
        n_results: int = 10,
        where: Mapping[str, Any] | None = None,
        rerank: int | None = None,
        where_document: Mapping[str, Any] | None = None,
        rerank_task: TaskLike = TaskType.RERANKING,
    ) -> list[QueryResult]:
        """The nearest documents of each query text (query side of the collection's task).

        ``rerank=N`` takes the ``max(N, n_results)`` nearest candidates from the index, rescores
        them with the shared model for ``rerank_task`` (:mod:`qzhou_plugins.rerank`: one pass over the
        instructed query and the candidates) and returns the best ``n_results`` by that score. Each
        hit keeps its index distance; its ``score`` is then the rerank score.
        """
        queries = validate_texts([texts] if isinstance(texts, str) else texts, what="query texts")
        for label, value in (("n_results", n_results), ("rerank", rerank)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive integer, not {value!r}")
        if not queries:
            return []
        fetch = n_results if rerank is None else max(rerank, n_results)
        raw = self.collection.query(
            query_embeddings=self.embedding_function.embed_queries(queries),
            n_results=fetch,
            where=dict(where) if where else None,
            where_document=dict(where_document) if where_document else None,  # type: ignore[arg-type]
            include=["documents", "metadatas", "distances"],
        )
        space = _space(self.collection)
        results = []
        for position, query in enumerate(queries):
            hits = [
                Hit(
                    id=id_,
                    document=document or "",
                    metadata=dict(metadata or {}),
                    distance=float(distance),
                    score=_similarity(space, float(distance)),
                )
                for id_, document, metadata, distance in zip(
                    raw["ids"][position],
                    (raw["documents"] or [[]])[position],
                    (raw["metadatas"] or [[]])[position],
                    (raw["distances"] or [[]])[position],
                    strict=True,
                )
            ]
            if rerank is not None and hits:
                scores = score_candidates(
                    self.encoder, query, [hit.document for hit in hits], task=rerank_task, empty="lowest"
                )
                order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))[:n_results]
                hits = [_rescored(hits[i], float(scores[i])) for i in order]
            results.append(QueryResult(query=query, hits=hits))
        return results

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
        chosen_model = model if model is not None else self.model
        options = dict(encoder_options)
        if same_model(chosen_model, self.model):
            recorded = self.embedding_function.get_config()
            options = {key: recorded[key] for key in PERSISTED_OPTIONS} | options
        chosen_task = task if task is not None else self.task
        missing = [
            id_
            for found in self._pages(["documents"])
            for id_, document in zip(found["ids"], found["documents"], strict=True)
            if document is None
        ]
        if missing:
            raise ValueError(
                f"{len(missing)} records of {self.name!r} have no stored document, so they cannot be "
                f"re-embedded (first: {', '.join(missing[:5])}); nothing was changed"
            )
        if new_name is not None:
            target_name = new_name
        else:
            encoder = Encoder.shared(model=chosen_model, **options)
            config = QZhouEmbeddingFunction.from_encoder(encoder, chosen_task).get_config()
            digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
            target_name = f"{self.name[:480]}-reembed-{digest}"
        target = QZhouCollection.open(
            target_name, client=self.client, model=chosen_model, task=chosen_task, **options
        )
        total = self.count()
        show = show_progress if show_progress is not None else total >= PROGRESS_THRESHOLD
        with tqdm(total=total, unit="text", desc=f"Re-embedding {self.name}", disable=not show) as progress:
            for found in self._pages(["documents", "metadatas"], page=batch_size):
                metadatas = found["metadatas"] or [None] * len(found["ids"])
                target.add(
                    found["documents"], metadatas, found["ids"], batch_size=batch_size, show_progress=False
                )
                progress.update(len(found["ids"]))
        source_ids, target_ids = self._ids(), target._ids()
        if source_ids != target_ids:
            raise RuntimeError(
                f"re-embedding {self.name!r} into {target_name!r} ended with {len(target_ids)} records for "
                f"{len(source_ids)} source records (was {self.name!r} written to meanwhile?); the original "
                "is untouched, run reembed again"
            )
        if new_name is not None:
            return target
        aside = f"{self.name[:480]}-replaced-{uuid.uuid4().hex[:12]}"
        original_name = self.name
        self.collection.modify(name=aside)
        target.collection.modify(name=original_name)
        self.client.delete_collection(aside)
        logger.info("re-embedded %r with %r; the previous vectors were deleted", original_name, chosen_model)
        # This object now stands for the new collection too, so that no caller keeps a stale one.
        self.collection, self.embedding_function, self.encoder = (
            target.collection, target.embedding_function, target.encoder,
        )  # fmt: skip
        return self

    def _pages(self, include: list[str], page: int = 1000) -> Iterator[dict[str, Any]]:
        """The whole collection, ``page`` records at a time (``include`` as in ``Collection.get``)."""
        offset = 0
        while True:
            found = self.collection.get(include=include, limit=page, offset=offset)  # type: ignore[arg-type]
            if found["ids"]:
                yield dict(found)
            if len(found["ids"]) < page:
                return
            offset += page

    def _ids(self) -> set[str]:
        return {id_ for found in self._pages([]) for id_ in found["ids"]}

    def __repr__(self) -> str:
        return f"QZhouCollection(name={self.name!r}, model={self.model!r})"


# -- helpers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    id: str
    text: str
    metadata: dict[str, Any] | None


def _batches(
    texts: Iterable[str],
    metadatas: Iterable[Mapping[str, Any] | None] | None,
    ids: Iterable[str] | None,
    batch_size: int,
) -> Iterator[list[_Record]]:
    """Validated batches of records; raises at the first batch with a problem, naming positions."""
    for label, value, kind in (
        ("texts", texts, "strings"),
        ("metadatas", metadatas, "mappings"),
        ("ids", ids, "strings"),
    ):
        if isinstance(value, (str, bytes, Mapping)):
            raise TypeError(
                f"{label} must be an iterable of {kind}, one per text, not a single {type(value).__name__}"
            )
        if value is not None and not isinstance(value, Iterable):
            raise TypeError(f"{label} must be an iterable of {kind}, not {type(value).__name__}")
    if all(isinstance(part, Sized) for part in (texts, metadatas, ids) if part is not None):
        lengths = {
            label: len(part)
            for label, part in (("texts", texts), ("metadatas", metadatas), ("ids", ids))
            if part is not None
        }  # type: ignore[arg-type]
        if len(set(lengths.values())) > 1:
            raise ValueError("lengths differ: " + ", ".join(f"{n} {label}" for label, n in lengths.items()))
    seen: dict[str, int] = {}
    rows = zip_longest(
        texts, metadatas if metadatas is not None else (), ids if ids is not None else (), fillvalue=_MISSING
    )
    position = 0
    chunk: list[tuple[Any, Any, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == batch_size:
            yield _check_batch(chunk, position, metadatas is not None, ids is not None, seen)
            position += len(chunk)
            chunk = []
    if chunk:
        yield _check_batch(chunk, position, metadatas is not None, ids is not None, seen)


def _check_batch(
    rows: list[tuple[Any, Any, Any]], start: int, with_metadatas: bool, with_ids: bool, seen: dict[str, int]
) -> list[_Record]:
    texts, metadatas, ids = zip(*rows, strict=True)
    for label, column, given in (
        ("texts", texts, True),
        ("metadatas", metadatas, with_metadatas),
        ("ids", ids, with_ids),
    ):
        ended = [start + i for i, value in enumerate(column) if (value is _MISSING) == given]
        if ended:
            raise ValueError(f"{label} ended after {ended[0]} items while the other inputs went on")
    for offset, text in enumerate(texts):
        if not isinstance(text, str):
            kind = "None" if text is None else f"a {type(text).__name__}"
            raise TypeError(f"texts must be strings: texts[{start + offset}] is {kind}")
        if not text.strip():
            raise ValueError(
                f"texts must not be empty or whitespace-only: texts[{start + offset}] is {text!r}"
            )
    records = []
    for offset, text in enumerate(texts):
        position = start + offset
        metadata = _checked_metadata(metadatas[offset] if with_metadatas else None, position)
        if with_ids:
            id_ = ids[offset]
            if not isinstance(id_, str) or not id_.strip():
                raise TypeError(f"ids must be non-empty strings: ids[{position}] is {id_!r}")
            if id_ in seen:
                raise ValueError(f"ids must be unique: {id_!r} is at positions {seen[id_]} and {position}")
            seen[id_] = position
        else:
            id_ = content_id(text, metadata)
        records.append(_Record(id=id_, text=text, metadata=metadata))
    return records


def _checked_metadata(metadata: Any, position: int) -> dict[str, Any] | None:
    """A metadata mapping as Chroma accepts it ({} becomes None, which Chroma stores as no metadata)."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadatas[{position}] must be a mapping or None, not {type(metadata).__name__}")
    if not metadata:
        return None
    as_dict = dict(metadata)
    try:
        validate_metadata(as_dict)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadatas[{position}] is not accepted by Chroma: {error}") from None
    return as_dict


def _get_collection(client: ClientAPI, name: str) -> Collection | None:
    try:
        # No embedding function here: building the persisted one would load its model before the check.
        return client.get_collection(name, embedding_function=None)  # type: ignore[arg-type]
    except NotFoundError:
        return None


def _recorded_config(collection: Collection) -> dict[str, Any]:
    """The persisted QZhou embedding function config, or a mismatch error if the collection has none."""
    persisted = collection.configuration_json.get("embedding_function") or {}
    if persisted.get("name") != EMBEDDING_FUNCTION_NAME:
        what = persisted.get("name") or "none recorded"
        raise CollectionMismatchError(
            f"collection {collection.name!r} was not made with QZhouEmbeddingFunction (its embedding "
            f"function: {what}), so its vectors cannot be compared with ours. It was left untouched; use "
            "another collection name, or open it with chromadb and the embedding function it was made with."
        )
    config = dict(persisted.get("config") or {})
    QZhouEmbeddingFunction.validate_config(config)
    # Chroma writes a collection.modify(configuration=...) before it asks the embedding function
    # whether the update is acceptable, so the record can have changed under the vectors: the copy
    # of the fingerprint kept in the collection metadata at creation tells.
    written = (collection.metadata or {}).get(FINGERPRINT_METADATA_KEY)
    if isinstance(written, str):
        differences = fingerprint_differences(
            json.loads(written), config, labels=("the vectors were made with", "the record now says")
        )
        if differences:
            listed = "".join(f"\n  - {line}" for line in differences)
            raise CollectionMismatchError(
                f"the embedding function recorded in collection {collection.name!r} was changed after its "
                f"vectors were written (with collection.modify?):{listed}\nIt was left untouched. Put the "
                "original embedding function back, or copy its documents into a new collection."
            )
    return config


def _check_recorded(collection: Collection, wanted: Mapping[str, Any]) -> None:
    differences = fingerprint_differences(_recorded_config(collection), wanted)
    if differences:
        raise _mismatch(collection.name, differences)


def _mismatch(name: str, differences: list[str]) -> CollectionMismatchError:
    listed = "".join(f"\n  - {line}" for line in differences)
    return CollectionMismatchError(
        f"collection {name!r} was built with another embedding setup, and new vectors would not be "
        f"comparable with its stored ones:{listed}\n"
        "The collection was left untouched. To proceed: open it with model=None and task=None to use what "
        f"it records; or use another collection name; or migrate it explicitly with "
        f"QZhouCollection.open({name!r}).reembed(model=..., task=...)."
    )


def _space(collection: Collection) -> str:
    configuration = collection.configuration_json
    for index in ("hnsw", "spann"):
        if configuration.get(index) and configuration[index].get("space"):
            return str(configuration[index]["space"])
    return str((collection.metadata or {}).get("hnsw:space", "l2"))


def _similarity(space: str, distance: float) -> float:
    """Cosine similarity from Chroma's distance (l2 is squared, which on unit vectors is 2 - 2 cos)."""
    return 1.0 - distance / 2.0 if space == "l2" else 1.0 - distance


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(id=hit.id, document=hit.document, metadata=hit.metadata, distance=hit.distance, score=score)


__all__ = [
    "DEFAULT_PATH",
    "AddResult",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "Hit",
    "QZhouCollection",
    "QueryResult",
    "content_id",
]
