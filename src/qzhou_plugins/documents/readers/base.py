"""What every reader gives: the sections of a file, with what the chunks cut from them record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..fields import Metadata

Cut = Literal["flow", "records"]


@dataclass(frozen=True)
class Section:
    text: str
    metadata: Metadata = field(default_factory=dict)


@dataclass
class Reading:
    """What a reader found in a file.

    ``cut`` says how the sections are chunked: ``flow`` sections continue one another (the pages of a
    PDF, the parts under a page's headings) and are joined by ``joiner`` and cut as one text, so no
    text is lost where a page ends; ``records`` sections (the lines of a ``.jsonl``) are cut one by one.
    """

    sections: list[Section]
    metadata: Metadata = field(default_factory=dict)
    """What every chunk of the file records (an HTML page's ``title``)."""
    warnings: list[str] = field(default_factory=list)
    """What was read only in part, each naming the file (pages with no text layer)."""
    cut: Cut = "flow"
    joiner: str = "\n\n"
    markdown: bool = False
    """Cut on Markdown structure first (headings, then paragraphs)."""


Reader = Callable[[Path], Reading]
"""The protocol: a file in, a :class:`Reading` out; a file that cannot be opened as its format raises
:class:`~qzhou_plugins.documents.errors.BrokenDocumentError`, one that is no text at all
:class:`~qzhou_plugins.documents.errors.BinaryDocumentError`."""


def missing_library(package: str, error: ImportError) -> ImportError:
    """The error for a reader whose library is not installed: it names the extra that brings it."""
    return ImportError(f"reading this format needs {package}: pip install 'qzhou-plugins[cli]' ({error})")
