"""Opening an index: check (or record) its settings, then hand its folder to its engine.

The engine modules are imported here, when chosen, so that tantivy is imported only by a process that
opens a tantivy index.
"""

from __future__ import annotations

import os

from . import analyzers
from .base import LexicalIndex
from .folder import index_folder, settle


def open_index(
    path: str | os.PathLike[str],
    *,
    engine: str | None = None,
    analyzer: str | None = None,
    k1: float | None = None,
    b: float | None = None,
    create: bool = True,
) -> LexicalIndex:
    """Open (or create) the lexical index in folder ``path``.

    ``engine`` (``"fts5"``, the default, or ``"tantivy"``), ``analyzer`` (``"english"``, the default,
    ``"chinese"`` or ``"auto"``), ``k1`` (1.2) and ``b`` (0.75) left out (None) mean "as recorded"
    for an existing index and the default for a new one; a value given that differs from the record
    is refused (:class:`LexicalSettingsError`) before anything is read or written. ``create=False``
    refuses a folder without an index (:class:`LexicalIndexError`). The folder must be the index's
    own: a folder with other files and no index record is refused, never written to.
    """
    folder = index_folder(path)
    # What a new index needs is imported before its folder is made: a missing extra leaves nothing.
    if analyzer is not None:
        analyzers.analyzer(analyzer)
    if engine == "tantivy":
        from .tantivy_index import import_tantivy

        import_tantivy()
    settings, _ = settle(folder, {"engine": engine, "analyzer": analyzer, "k1": k1, "b": b}, create=create)
    if settings.engine == "tantivy":
        from .tantivy_index import TantivyIndex

        return TantivyIndex(folder, settings)
    from .fts5_index import Fts5Index

    return Fts5Index(folder, settings)
