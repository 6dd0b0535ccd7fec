"""Planning a sync: what each file given is now, against what Chroma holds and what the records say.

Chroma is the source of truth: its chunk metadata ``source`` says which chunks each file has. A file's
record (:mod:`qzhou_plugins.documents.record`) is trusted only when its chunk ids are exactly those, its
source and chunking settings are today's; then a file of the same size and modification time is not
read at all, and one with the same bytes (sha256) is not chunked. Any other file is read and chunked,
and its chunk ids decide: the same ids as stored is unchanged (its record repaired), others replace them.

Nothing here writes; :mod:`.syncing` applies the plan.
"""

from __future__ import annotations

import os
import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from chromadb.api.models.Collection import Collection

from ...documents import (
    BinaryDocumentError,
    BrokenDocumentError,
    Chunk,
    DocumentError,
    FoundFiles,
    UnreadableDocumentError,
    find_documents,
    read_file,
    source_name,
)
from ...documents.record import ChunkSettings, FileRecord, file_sha256
from .migration import pages


class PathError(DocumentError):
    """A path given leads to no document (missing, neither file nor folder, of a kind no reader takes)."""


@dataclass
class FileChange:
    """One file found: what it holds now, and which of Chroma's chunks it replaces."""

    source: str
    kind: str
    """``added``, ``replaced`` or ``unchanged``."""
    chunks: list[Chunk] = field(default_factory=list)
    """Its chunks now (empty when unchanged, and for a file with no text)."""
    old_ids: frozenset[str] = frozenset()
    """Chunk ids stored for it that its chunks no longer have: removed after the new ones are added."""
    new_ids: int = 0
    """How many of its chunk ids are not stored yet (what a dry run says would be added)."""
    record: FileRecord | None = None
    """The record to write once Chroma holds the change (None: the record stands as it is)."""
    skipped: str | None = None
    """Why the file was not read (binary, encrypted or damaged), to print."""
    warnings: list[str] = field(default_factory=list)
    """What of it was not read (a PDF's scanned pages), to print."""


@dataclass
class SyncPlan:
    changes: list[FileChange] = field(default_factory=list)
    removed: dict[str, frozenset[str]] = field(default_factory=dict)
    """Files gone from a folder synced, by source: the ids of their chunks."""
    removed_paths: list[str] = field(default_factory=list)
    """The records of those files."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Files not synced, each with the reason to print (binary, or unreadable for now)."""
    empty: list[str] = field(default_factory=list)
    """Files with no visible text."""
    warnings: list[str] = field(default_factory=list)
    """Files read only in part (a PDF's scanned pages), each warning naming the file."""
    not_read: str | None = None
    """The line that sums up the files in the folders that no reader takes, by suffix."""


def files_to_sync(paths: Sequence[str | os.PathLike[str]]) -> tuple[FoundFiles, list[Path]]:
    """The files to sync (with those named directly, and the kinds no reader takes), and the resolved
    folders whose vanished files are removed.

    A folder with no supported file left is a folder whose files all vanished (not an error, as it is
    for :func:`~qzhou_plugins.documents.find_documents`); a missing file named on its own is a
    :class:`PathError`.
    """
    folders = [Path(given).resolve() for given in paths if Path(given).is_dir()]
    try:
        return find_documents(paths), folders  # the common case: one walk, one check for duplicates
    except UnreadableDocumentError:
        raise
    except DocumentError:
        pass  # a folder whose files all vanished, or a path that is wrong: find which
    with_files = []
    for given in paths:
        try:
            find_documents([given])
        except UnreadableDocumentError:
            raise
        except DocumentError as error:
            if not Path(given).is_dir():
                raise PathError(str(error)) from None
            continue
        with_files.append(given)
    return (find_documents(with_files) if with_files else FoundFiles()), folders


def stored_sources(collection: Collection) -> dict[str, set[str]]:
    """The ids of the chunks Chroma holds for each ``source`` (one pass over the metadata, no vectors)."""
    sources: dict[str, set[str]] = {}
    for page in pages(collection, ["metadatas"], page=5000):
        for id_, metadata in zip(page["ids"], page["metadatas"] or [], strict=False):
            source = (metadata or {}).get("source")
            if isinstance(source, str):
                sources.setdefault(source, set()).add(id_)
    return sources


def plan_sync(
    files: Sequence[Path],
    folders: Sequence[Path],
    records: Mapping[str, FileRecord],
    stored: Mapping[str, set[str]],
    settings: ChunkSettings,
    *,
    keep_missing: bool = False,
    skip_unreadable: bool = False,
    named: Container[Path] = (),
) -> SyncPlan:
    """What to add, replace and remove so that Chroma holds exactly what a fresh index of ``files`` would.

    Files that cannot be read raise (naming the file), before anything is written; with
    ``skip_unreadable`` (a watch, where a file may be half written or just deleted) they are skipped
    and read again next time. A binary file is always skipped, its old chunks removed; so is an
    encrypted or damaged one found in a folder (one in ``named``, given by the user, raises).
    """
    plan = SyncPlan()
    found: dict[str, str] = {}  # resolved path -> source
    cwd = Path.cwd().resolve()
    for file in files:
        resolved = file.resolve()
        path = str(resolved)
        try:
            change = _change_of(file, resolved, records.get(path), stored, settings, cwd, resolved in named)
        except (DocumentError, OSError) as error:
            if not skip_unreadable:
                if isinstance(error, OSError):
                    why = error.strerror or error
                    raise UnreadableDocumentError(f"{file}: cannot be read ({why})") from None
                raise
            plan.skipped.append((str(file), f"{error}; read again next time"))
            found[path] = source_name(file)  # neither removed nor changed this time
            continue
        found[path] = change.source
        plan.warnings.extend(change.warnings)
        if change.skipped is not None:
            plan.skipped.append((str(file), change.skipped))
        if change.record is not None and not change.record.chunk_ids:
            plan.empty.append(change.source)
        plan.changes.append(change)
    if not keep_missing:
        _plan_removals(plan, folders, records, stored, found)
    return plan


def _change_of(
    file: Path,
    resolved: Path,
    record: FileRecord | None,
    stored: Mapping[str, set[str]],
    settings: ChunkSettings,
    cwd: Path,
    named: bool,
) -> FileChange:
    # source_name(file) for a path resolved already (source_name resolves it again, and the
    # working directory: half the time of a sync with nothing to do).
    source = resolved.relative_to(cwd).as_posix() if resolved.is_relative_to(cwd) else resolved.as_posix()
    path = str(resolved)
    stat = file.stat()
    held = set(stored.get(source, ()))
    if record is not None and record.source != source:
        held |= stored.get(record.source, set())  # indexed from another working directory before
    trusted = (
        record is not None
        and record.source == source
        and record.settings == settings.key()
        and set(record.chunk_ids) == held
    )
    if trusted and record is not None and record.same_stat(stat):
        return FileChange(source, "unchanged")
    digest = file_sha256(file)
    now = time.time_ns()
    if trusted and record is not None and digest == record.sha256:
        refreshed = replace(record, size=stat.st_size, mtime_ns=stat.st_mtime_ns, checked_ns=now)
        return FileChange(source, "unchanged", record=refreshed)
    try:
        reading = read_file(file, settings.chunk_size, settings.chunk_overlap, source=source)
    except (BinaryDocumentError, BrokenDocumentError) as error:
        if named and isinstance(error, BrokenDocumentError):
            raise  # an encrypted or damaged file the user named: an error, not a warning
        kind = "replaced" if held else "unchanged"  # a fresh index holds nothing of it: its old chunks go
        return FileChange(source, kind, old_ids=frozenset(held), skipped=str(error))
    chunks = reading.chunks
    ids = tuple(dict.fromkeys(chunk.id for chunk in chunks))
    new = FileRecord(path, source, stat.st_size, stat.st_mtime_ns, digest, settings.key(), ids, now)
    if set(ids) == held and (held or record is not None):
        return FileChange(source, "unchanged", record=new, warnings=reading.warnings)
    kind = "replaced" if held else "added"
    return FileChange(
        source, kind, chunks, frozenset(held - set(ids)), len(set(ids) - held), new, warnings=reading.warnings
    )


def _plan_removals(
    plan: SyncPlan,
    folders: Sequence[Path],
    records: Mapping[str, FileRecord],
    stored: Mapping[str, set[str]],
    found: Mapping[str, str],
) -> None:
    """Files gone from a folder synced: by their records, and by Chroma's sources that no record knows."""
    found_sources = set(found.values())
    known_sources = {record.source for record in records.values()}
    for path, record in records.items():
        if path not in found and _under(Path(path), folders):
            plan.removed_paths.append(path)
            if record.source not in found_sources:
                plan.removed[record.source] = frozenset(stored.get(record.source, ()))
    for source, ids in stored.items():
        if source in found_sources or source in known_sources:
            continue
        # As source_name made it: relative to the working directory, or absolute.
        if _under(Path(source).resolve(), folders):
            plan.removed[source] = frozenset(ids)


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)
