"""What can go wrong with a document, as classes the callers tell apart.

A wrong path or a bad line the user wrote is an error; a file that is not what its name says (binary
under ``.txt``) or that cannot be opened as its format (an encrypted or damaged PDF) is skipped with a
warning when a folder holds it, since one bad file must not stop a folder, and is an error when the
user named it directly.
"""

from __future__ import annotations


class DocumentError(ValueError):
    """A document cannot be found, read or used as it is; the message names the file (and line)."""


class UnreadableDocumentError(DocumentError):
    """A file or folder cannot be read (an I/O error): a failure while working, not a wrong path."""


class BinaryDocumentError(DocumentError):
    """The file is not text (it holds NUL bytes): ``index`` skips it with a warning."""


class BrokenDocumentError(DocumentError):
    """The file cannot be opened as its format (encrypted, damaged): skipped with a warning in a folder,
    an error when named directly. The message names the file and why."""
