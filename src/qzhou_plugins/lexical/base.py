"""The seam between a lexical index and its users: the :class:`LexicalIndex` protocol.

An index is derived data: a source of truth elsewhere (a Chroma collection) holds the documents, and
the index must be kept in step with it, or repaired from it. So beyond add, delete and search it
offers what that repair needs: the ids it holds (:meth:`LexicalIndex.ids`) and a journal of ids about
to change (:meth:`LexicalIndex.mark_pending`): marked, durably, before the source of truth is
written, and cleared by the :meth:`~LexicalIndex.add` or :meth:`~LexicalIndex.delete` that brings
the index in step. After a crash between the two writes, :meth:`~LexicalIndex.pending` names the
ids to repair, including those whose text was replaced (which a comparison of ids cannot see).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..validation import as_list, find_lone_surrogate, positions
from .settings import LexicalSettings


class LexicalHit(NamedTuple):
    """One result: a document id and its BM25 score (higher is better)."""

    id: str
    score: float


@runtime_checkable
class LexicalIndex(Protocol):
    """A persisted BM25 index of (id, text) documents. Every write is one transaction."""

    path: Path
    settings: LexicalSettings

    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Index ``texts`` under ``ids``; an id already indexed has its text replaced (upsert).

        All or nothing; clears the pending marks of ``ids``. A text may be empty (or hold no
        searchable term): the id is then held and counted, and no query finds it.
        """
        ...

    def delete(self, ids: Iterable[str]) -> int:
        """Remove ``ids`` (those not indexed are ignored) and clear their pending marks; how many went."""
        ...

    def search(self, query: str, k: int = 10) -> list[LexicalHit]:
        """The ``k`` best documents for ``query`` by BM25, best first; ties in id order (fts5).

        The query is analyzed as the documents were, so no character of it is an operator; a query
        with no searchable term (stopwords, punctuation, emoji) gives an empty list.
        """
        ...

    def count(self) -> int:
        """How many documents (ids) the index holds."""
        ...

    def ids(self) -> Iterator[str]:
        """Every id the index holds (in no promised order)."""
        ...

    def mark_pending(self, ids: Iterable[str]) -> None:
        """Record, durably, that ``ids`` are about to change in the source of truth."""
        ...

    def pending(self) -> list[str]:
        """Ids marked pending and not yet brought in step by an add or a delete."""
        ...

    def close(self) -> None:
        """Release files and locks; the index can be opened again. Closing twice is harmless."""
        ...

    def remove(self) -> None:
        """Close the index and delete its folder."""
        ...

    def __enter__(self) -> LexicalIndex: ...

    def __exit__(self, *exc_info: object) -> None: ...


def checked_ids(ids: Any, *, what: str = "ids") -> list[str]:
    """Ids as a list of non-empty strings that can be stored (no lone surrogate), named if not."""
    items = as_list(ids, what=what)
    bad = [i for i, id_ in enumerate(items) if not isinstance(id_, str) or not id_]
    if bad:
        raise TypeError(f"{what} must be non-empty strings: position(s) {positions(bad)} are not")
    broken = [i for i, id_ in enumerate(items) if find_lone_surrogate(id_) is not None]
    if broken:
        raise ValueError(
            f"{what} must be valid Unicode: position(s) {positions(broken)} hold a lone surrogate"
        )
    return items


def checked_documents(ids: Any, texts: Any) -> tuple[list[str], list[str]]:
    """``ids`` and ``texts`` of one add: as many of each, ids unique, texts strings."""
    id_list = checked_ids(ids)
    text_list = as_list(texts, what="texts")
    if len(id_list) != len(text_list):
        raise ValueError(f"{len(id_list)} ids and {len(text_list)} texts given: one text per id")
    bad = [i for i, text in enumerate(text_list) if not isinstance(text, str)]
    if bad:
        raise TypeError(
            f"texts must be strings (an empty one for a record without text): position(s) {positions(bad)}"
        )
    seen: set[str] = set()
    repeated = [id_ for id_ in id_list if id_ in seen or seen.add(id_)]  # type: ignore[func-returns-value]
    if repeated:
        raise ValueError(f"ids must be unique within one add: {', '.join(map(repr, repeated[:5]))} repeated")
    return id_list, text_list
