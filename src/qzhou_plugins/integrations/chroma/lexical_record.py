"""Where a collection's lexical index lives, and the lexical settings the collection records.

The root of the indexes is ``lexical_path`` when one is given; otherwise ``qzhou-lexical`` in the folder
of an embedded database, beside Chroma's own files and never inside them; for an in-memory database, a
temporary folder of this process (removed when it ends, as the database is). A Chroma server has no
folder on this machine, so its collections have a lexical index only where the user says
(``lexical_path``). Each collection's index is the folder ``<root>/<collection name>``.

The analyzer and the engine are recorded in the collection's metadata (``qzhou:lexical``), beside the
fingerprint of its vectors, when it is created, so that reopening it with another analyzer is refused
as another model is. A collection made by an earlier version records nothing until its index is built.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from ...lexical import analyzers
from ...lexical.folder import index_folder
from ...lexical.settings import DEFAULT_ANALYZER, DEFAULT_ENGINE, ENGINES
from .fingerprint import CollectionMismatchError
from .writing import LOCAL_IMPLEMENTATIONS

LEXICAL_FOLDER = "qzhou-lexical"
"""The folder of the lexical indexes in an embedded database's folder, one sub-folder per collection."""
SETTINGS_METADATA_KEY = "qzhou:lexical"
"""Collection metadata key of the lexical settings (analyzer, engine), written at creation."""

_process_root: Path | None = None
_process_root_lock = threading.Lock()


def lexical_root(client: ClientAPI, lexical_path: Any) -> Path | None:
    """The folder of the collections' lexical indexes, or None for a server without ``lexical_path``."""
    if lexical_path is not None:
        return index_folder(lexical_path)
    settings = client.get_settings()
    if settings.chroma_api_impl not in LOCAL_IMPLEMENTATIONS:
        return None
    if settings.is_persistent and settings.persist_directory:
        return Path(settings.persist_directory).absolute() / LEXICAL_FOLDER
    return _temporary_root()


def _temporary_root() -> Path:
    """One folder for this process's in-memory collections, removed when the process ends (as they are)."""
    global _process_root
    with _process_root_lock:
        if _process_root is None:
            _process_root = Path(tempfile.mkdtemp(prefix="qzhou-lexical-"))
            atexit.register(shutil.rmtree, _process_root, ignore_errors=True)
        return _process_root


# -- the settings the collection records ------------------------------------------------------------


def check_choice(analyzer: str | None, engine: str | None) -> None:
    """Each of ``analyzer`` and ``engine`` given is known and its extra installed (None: as recorded)."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"unknown lexical engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if analyzer is not None:
        analyzers.analyzer(analyzer)  # an unknown name is a ValueError, a missing extra an ImportError
    if engine == "tantivy":
        from ...lexical.tantivy_index import import_tantivy

        import_tantivy()


def creation_settings(analyzer: str | None, engine: str | None) -> dict[str, str]:
    """The collection metadata of a new collection's lexical settings (defaults for those not given)."""
    chosen = {"analyzer": analyzer or DEFAULT_ANALYZER, "engine": engine or DEFAULT_ENGINE}
    return {SETTINGS_METADATA_KEY: json.dumps(chosen)}


def recorded_settings(collection: Collection) -> dict[str, str] | None:
    """The analyzer and engine ``collection`` records (None: made before collections recorded them)."""
    raw = (collection.metadata or {}).get(SETTINGS_METADATA_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        record = None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), str) for k in ("analyzer", "engine")
    ):
        raise ValueError(
            f"collection {collection.name!r} has a damaged {SETTINGS_METADATA_KEY!r} metadata entry "
            f"({raw!r}): it should record the analyzer and engine of its lexical index"
        )
    return {"analyzer": record["analyzer"], "engine": record["engine"]}


def settle_settings(
    collection: Collection, analyzer: str | None, engine: str | None
) -> dict[str, str | None]:
    """What the lexical side of an existing collection uses: its record, refusing a different wish.

    A collection that records nothing (an earlier version made it) takes what is asked, or what its
    index records, or the defaults; the record is written when its index is built.
    """
    recorded = recorded_settings(collection)
    if recorded is None:
        return {"analyzer": analyzer, "engine": engine}
    asked = {"analyzer": analyzer, "engine": engine}
    differences = [
        f"{'lexical engine' if key == 'engine' else key}: the collection has {recorded[key]!r}, "
        f"you asked for {value!r}"
        for key, value in asked.items()
        if value is not None and value != recorded[key]
    ]
    if differences:
        listed = "".join(f"\n  - {line}" for line in differences)
        raise CollectionMismatchError(
            f"collection {collection.name!r} keeps a lexical index made another way, and its terms would "
            f"not match what you asked for:{listed}\nThe collection was left untouched. To proceed: open it "
            "with analyzer=None and lexical_engine=None to use what it records, or copy its documents into "
            "a new collection opened with the analyzer you want."
        )
    return dict(recorded)


def record_settings(collection: Collection, settings: Mapping[str, str]) -> None:
    """Write the settings into the metadata of a collection that records none (an older one).

    Chroma replaces the whole metadata on ``modify`` and refuses one that names the distance function;
    a collection with ``hnsw:`` keys keeps its metadata, and its settings live in ``lexical.json`` alone.
    """
    metadata = dict(collection.metadata or {})
    if SETTINGS_METADATA_KEY in metadata or any(key.startswith("hnsw:") for key in metadata):
        return
    chosen = {"analyzer": settings["analyzer"], "engine": settings["engine"]}
    collection.modify(metadata={**metadata, SETTINGS_METADATA_KEY: json.dumps(chosen)})
