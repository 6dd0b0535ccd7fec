"""Record metadata as Chroma accepts it: the shared rules (:mod:`qzhou_plugins.metadata`), then Chroma's.

The rules that Chroma's own checks miss (NaN, 64-bit ints, None values, reserved keys, lone
surrogates) are the package's, shared with the bulk job; Chroma's ``validate_metadata`` runs last,
for anything it adds later (sparse vectors, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chromadb.api.types import SparseVector, validate_metadata

from ...metadata import check_metadata, check_unicode

__all__ = ["check_unicode", "checked_metadata"]


def checked_metadata(metadata: Any, where: str) -> dict[str, Any] | None:
    """A record's metadata as Chroma accepts it ({} becomes None: Chroma stores no metadata).

    ``where`` names the record in the messages: ``metadatas[3]`` for ``add``, the shard and row
    for ``load``.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{where} must be a mapping or None, not {type(metadata).__name__}")
    if not metadata:
        return None
    as_dict = dict(metadata)
    check_metadata(as_dict, where, also=(SparseVector,))  # Chroma checks its own sparse vectors
    try:
        validate_metadata(as_dict)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} is not accepted by Chroma: {error}") from None
    return as_dict
