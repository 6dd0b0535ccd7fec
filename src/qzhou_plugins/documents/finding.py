"""Finding the files to read: each file named, and the files under each folder that a reader takes.

Files in a folder that no reader takes are counted by suffix, for the one line that says what was
left out ("skipped 3 files: 2 .png, 1 .xlsx"); hidden files and folders (``.git``, ``.venv``) are
left out silently, as git and grep leave them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DocumentError, UnreadableDocumentError
from .readers import SUPPORTED_SUFFIXES


@dataclass
class FoundFiles:
    """The files to read, the ones named directly among them, and what the folders held besides."""

    files: list[Path] = field(default_factory=list)
    named: set[Path] = field(default_factory=set)
    """The files the user named (resolved; not found in a folder): an encrypted or damaged one is an error."""
    passed_over: dict[Path, str] = field(default_factory=dict)
    """Files in the folders that no reader takes (resolved, so a folder given twice counts once): suffix."""

    @property
    def skipped(self) -> Counter[str]:
        """Files in the folders that no reader takes, by suffix (``""`` for a name without one)."""
        return Counter(self.passed_over.values())

    def skipped_line(self) -> str | None:
        """``skipped 3 files: 2 .png, 1 .xlsx (...)``, most common first; None when nothing was skipped."""
        if not self.skipped:
            return None
        total = sum(self.skipped.values())
        kinds = ", ".join(
            f"{count} {suffix or '(no suffix)'}" for suffix, count in self.skipped.most_common()
        )
        return f"skipped {total} file{'s' if total != 1 else ''}: {kinds} (kinds no reader takes)"


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to index (:func:`find_documents`'s files)."""
    return find_documents(paths).files


def find_documents(paths: Sequence[str | Path]) -> FoundFiles:
    """The files to index: each file given, and the supported files under each folder (sorted).

    Hidden files and folders are skipped when walking; a missing path, a path that is neither a file
    nor a folder (a FIFO, a device), a folder with no supported file or a file of an unsupported kind
    named explicitly is a :class:`DocumentError` (the CLI's usage error).
    """
    found = FoundFiles()
    files: list[Path] = []
    for given in paths:
        try:
            files.extend(_files_of(Path(given), given, found))
        except OSError as error:  # an I/O error on a file's or folder's entry: as when reading a file
            raise UnreadableDocumentError(
                f"{error.filename or given}: cannot be read ({error.strerror or error})"
            ) from None
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    found.files = list(unique.values())
    return found


def _files_of(path: Path, given: str | Path, found: FoundFiles) -> list[Path]:
    """The file ``given`` names, or the supported files under the folder it names."""
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DocumentError(
                f"{given}: unsupported file type (index reads {', '.join(SUPPORTED_SUFFIXES)})"
            )
        found.named.add(path.resolve())
        return [path]
    if path.is_dir():
        documents = []
        skipped: dict[Path, str] = {}
        for candidate in path.rglob("*"):
            if any(part.startswith(".") for part in candidate.relative_to(path).parts):
                continue
            if not candidate.is_file():
                continue
            suffix = candidate.suffix.lower()
            if suffix in SUPPORTED_SUFFIXES:
                documents.append(candidate)
            else:
                skipped[candidate.resolve()] = suffix
        if not documents:
            raise DocumentError(f"{given}: no {', '.join(SUPPORTED_SUFFIXES)} files in this folder")
        found.passed_over.update(skipped)
        return sorted(documents)
    if path.exists():
        raise DocumentError(f"{given}: not a regular file or a folder")
    raise DocumentError(f"{given}: no such file or folder")


def source_name(file: Path) -> str:
    """The path recorded as a chunk's source: relative to the working directory when under it.

    Chunk ids hash the text with its metadata, so the same file given as ``docs/a.md`` or as
    ``/home/me/docs/a.md`` must record the same source for a rerun to add nothing twice.
    """
    resolved = file.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()
