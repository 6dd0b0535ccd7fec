"""The CLI's side of reading documents: a wrong path is a usage error (exit code 2).

The reading and chunking themselves are :mod:`qzhou_plugins.documents`, shared with the bulk job's
documents source; what stays here is the one thing the command line adds, that a path which does not
lead to documents is found before any work starts and reported as a usage error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import documents
from .errors import DocumentError, UsageError


def find_files(paths: Sequence[str]) -> list[Path]:
    """:func:`find_documents`'s files."""
    return find_documents(paths).files


def find_documents(paths: Sequence[str]) -> documents.FoundFiles:
    """:func:`qzhou_plugins.documents.find_documents`, a path that leads to no documents a usage error
    (one that cannot be read, an I/O error, is a failure, as when a file's content cannot be read)."""
    try:
        return documents.find_documents(paths)
    except documents.UnreadableDocumentError:
        raise
    except DocumentError as error:
        raise UsageError(str(error)) from None
