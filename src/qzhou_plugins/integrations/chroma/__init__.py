"""Chroma 1.x on the shared core: a persisted embedding function and a collection helper.

The data path of :class:`QZhouCollection`, one module per step::

    open    opening.py      name and path checked -> create, or compare the record (fingerprint.py)
    add     records.py      texts (validation), metadata (metadata.py) and ids checked, records built
            writing.py      missing ids embedded (embedding_function.py -> Encoder) and written
    query   query_options   what to search, filter and rerank with, checked once (QueryOptions)
            query.py        query side embedded -> Chroma's nearest -> optional rerank (rerank.rank)
            hybrid.py       lexical mode, or both sides fused (lexical.fuse), filters on both
    upsert  changing.py     replace what ids hold, delete by ids or filters, delete the collection
    lexical lexical_record  where the lexical index lives, the analyzer the collection records
            lexical_side.py opened and repaired from Chroma, written in step with every write
    reembed migration.py    copy into a collection of the new setup, then swap it in
    sync    sync_plan.py    files against Chroma's sources and the per-file records: what changed
            syncing.py      new chunks added, then old ones removed, then the records written
    load    precomputed.py  a bulk output's fingerprint checked (or a collection made from it),
                            its vectors written as they are, stored ids skipped (writing.py)

Importing this package registers :class:`QZhouEmbeddingFunction` with Chroma. It needs the
``chroma`` extra; the public import path is :mod:`qzhou_plugins.chroma`.
"""

try:
    import chromadb  # noqa: F401  (the one place that says which extra is missing)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("qzhou_plugins.chroma needs chromadb: pip install 'qzhou-plugins[chroma]'") from error

from .changing import UpsertResult
from .collection import QZhouCollection
from .embedding_function import QZhouEmbeddingFunction
from .fingerprint import EMBEDDING_FUNCTION_NAME, CollectionMismatchError
from .lexical_side import LexicalUnavailableError
from .opening import DEFAULT_PATH, CollectionNotFoundError
from .query import Hit, QueryResult
from .query_options import QueryOptions
from .records import content_id
from .syncing import SyncSummary
from .writing import AddResult

__all__ = [
    "DEFAULT_PATH",
    "EMBEDDING_FUNCTION_NAME",
    "AddResult",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "Hit",
    "LexicalUnavailableError",
    "QZhouCollection",
    "QZhouEmbeddingFunction",
    "QueryOptions",
    "QueryResult",
    "SyncSummary",
    "UpsertResult",
    "content_id",
]
