"""Bringing an index in step with its source of truth, which it knows only through two functions.

The source (a Chroma collection, in the Chroma helper) is asked for its ids and for the texts of
some ids; the index is changed to match:

1. the ids marked pending (about to change when a process stopped) are read again from the source
   and added (replaced) or deleted: this costs what the pending ids cost, and catches a text replaced
   in the source but not in the index, which no comparison of ids can see;
2. then, if the index and the source hold different numbers of ids, every id of each is compared
   and the difference added or deleted: this is also how an index is first built for a source that
   has none (an older collection), with a progress bar.

Equal counts and no pending mark are taken as in step: a change made to the source by a writer that
does not mark pending ids (plain Chroma code) and that keeps the count is not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tqdm.auto import tqdm

from .base import LexicalIndex

TextsOf = Callable[[list[str]], Mapping[str, str | None]]
"""Ids -> the source's text for each id it holds (None: held without a text); absent ids left out."""


@dataclass(frozen=True)
class Repair:
    """What :func:`repair` changed: ids (re)indexed, ids deleted, and whether every id was compared."""

    added: int = 0
    deleted: int = 0
    compared_all: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.deleted)


def repair(
    index: LexicalIndex,
    source_count: int,
    source_ids: Callable[[], Iterable[str]],
    texts_of: TextsOf,
    *,
    batch_size: int = 1000,
    show_progress: bool = False,
) -> Repair:
    """Make ``index`` hold the ids and texts of its source; see the module for the two steps.

    ``source_count`` is how many ids the source holds now; ``source_ids`` is called only when the
    counts differ after the pending ids are redone.
    """
    added, deleted = _redo(index, index.pending(), texts_of, batch_size)
    if index.count() == source_count:
        return Repair(added, deleted)
    held = set(index.ids())
    missing: list[str] = []
    for id_ in source_ids():
        if id_ in held:
            held.discard(id_)
        else:
            missing.append(id_)
    if held:
        deleted += index.delete(sorted(held))
    with tqdm(total=len(missing), unit="text", desc="Lexical index", disable=not show_progress) as bar:
        for start in range(0, len(missing), batch_size):
            more, gone = _redo(index, missing[start : start + batch_size], texts_of, batch_size)
            added, deleted = added + more, deleted + gone
            bar.update(len(missing[start : start + batch_size]))
    return Repair(added, deleted, compared_all=True)


def _redo(index: LexicalIndex, ids: list[str], texts_of: TextsOf, batch_size: int) -> tuple[int, int]:
    """Add the ids the source holds (with its texts) and delete the others; the two counts."""
    added = deleted = 0
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        texts = texts_of(chunk)
        present = [id_ for id_ in chunk if id_ in texts]
        absent = [id_ for id_ in chunk if id_ not in texts]
        if present:
            index.add(present, [texts[id_] or "" for id_ in present])
            added += len(present)
        if absent:  # deleted even where the index never held them: that clears their pending marks
            deleted += index.delete(absent)
    return added, deleted
