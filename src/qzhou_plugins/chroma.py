"""Chroma integration: ``from qzhou_plugins.chroma import QZhouCollection, QZhouEmbeddingFunction``.

Importing this module registers :class:`QZhouEmbeddingFunction` with Chroma, so that a collection
created with it is reopened, in any process, with the same model and instructions. Needs the
``chroma`` extra (``pip install 'qzhou-plugins[chroma]'``). The code is in
:mod:`qzhou_plugins.integrations.chroma`.
"""

from .integrations.chroma import (
    DEFAULT_PATH,
    EMBEDDING_FUNCTION_NAME,
    AddResult,
    CollectionMismatchError,
    CollectionNotFoundError,
    Hit,
    QueryResult,
    QZhouCollection,
    QZhouEmbeddingFunction,
    content_id,
)

__all__ = [
    "DEFAULT_PATH",
    "EMBEDDING_FUNCTION_NAME",
    "AddResult",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "Hit",
    "QZhouCollection",
    "QZhouEmbeddingFunction",
    "QueryResult",
    "content_id",
]
