"""The command's two kinds of failure and how they are printed.

Exit codes follow the Unix habit: 2 for a usage error, found before any work starts, and 1 for a
failure while working. Either is printed as one line on stderr; ``--debug`` shows the traceback.
:class:`DocumentError` (a document cannot be read or used; the message names the file and line) is
the shared reader's own (:mod:`qzhou_plugins.documents`), re-exported: one class wherever documents
are read, the CLI or the bulk job.
"""

from __future__ import annotations

from ..documents import DocumentError

__all__ = ["DocumentError", "UsageError", "one_line"]


class UsageError(Exception):
    """The command line is wrong; nothing has been done yet (exit code 2)."""


def one_line(error: BaseException) -> str:
    """An error's message on one line (a multi-line message would break the one-line contract)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
