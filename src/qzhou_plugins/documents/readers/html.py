"""HTML: the page's text (headings, paragraphs, lists, tables) with its ``title``, without the chrome.

selectolax's Lexbor parser (an HTML5 parser, as browsers parse) was chosen by measuring it against the
standard library's html.parser and BeautifulSoup with lxml on the same pages: the same words, at about
3x html.parser's pages per second and 25x BeautifulSoup's. Scripts, styles, templates, ``noscript``,
navigation and a page's own header and footer are never indexed (an article's header and footer are
its content and are kept); elements marked ``hidden`` are left out too.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

from ...validation import has_content
from ..errors import BinaryDocumentError
from ..fields import Metadata
from .base import Reading, Section, missing_library
from .text import read_bytes

NEVER = frozenset({"script", "style", "template", "noscript", "nav", "svg", "iframe", "object", "head",
                   "button", "select", "textarea", "dialog"})  # fmt: skip
CHROME = frozenset({"header", "footer"})
"""Left out unless inside an article or a section (where they belong to its content)."""
CONTENT = frozenset({"article", "section", "main"})
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
PARAGRAPHS = frozenset({"p", "div", "ul", "ol", "dl", "table", "blockquote", "pre", "figure", "form",
                        "article", "section", "main", "aside", "address", "fieldset", "details", "hr",
                        *HEADINGS, *CHROME})  # fmt: skip
LINES = frozenset({"li", "tr", "dt", "dd", "br", "caption", "figcaption", "summary", "legend"})
CELLS = frozenset({"td", "th"})
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def read_html(file: Path) -> Reading:
    """One section per heading (the text under it records ``heading``), the page's ``title`` on all."""
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise missing_library("selectolax", error) from error
    tree = LexborHTMLParser(_decode(file))
    title_node = tree.css_first("head > title") or tree.css_first("title")
    title = _SPACES.sub(" ", title_node.text()).strip() if title_node is not None else ""
    writer = _Writer()
    if tree.body is not None:
        writer.walk(tree.body)
    metadata: Metadata = {"title": title} if title else {}
    return Reading(writer.sections(), metadata=metadata)


def _decode(file: Path) -> str:
    """The page's text: UTF-8 (with or without a byte-order mark), else the charset its <meta> names,
    else windows-1252 (what browsers assume of a page that says nothing)."""
    data = read_bytes(file)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    if b"\0" in data:
        raise BinaryDocumentError(f"{file}: skipped, a binary file (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        declared = _CHARSET.search(data[:4096])
        if declared:
            try:
                return data.decode(declared.group(1).decode("ascii"), errors="replace")
            except LookupError:
                pass
        return data.decode("cp1252", errors="replace")


class _Writer:
    """Lays the page's text out as a reader sees it: one paragraph per block, one line per list item
    or table row (cells joined by `` | ``), a new section at each heading."""

    def __init__(self) -> None:
        self._done: list[tuple[str | None, list[str]]] = [(None, [])]
        self._line: list[str] = []
        self._preformatted = 0

    def walk(self, node: Any, in_content: bool = False) -> None:
        child = node.child
        while child is not None:
            self._visit(child, in_content)
            child = child.next

    def _visit(self, node: Any, in_content: bool) -> None:
        tag = node.tag
        if tag == "-text":
            text = node.text_content or ""
            self._line.append(text if self._preformatted else _SPACES.sub(" ", text))
            return
        if tag.startswith("-") or tag in NEVER or "hidden" in node.attributes:
            return
        if tag in CHROME and not in_content:
            return
        if tag in HEADINGS:
            self._end_line()
            heading = _SPACES.sub(" ", node.text(deep=True)).strip()
            self._done.append((heading or None, []))
        block = tag in PARAGRAPHS or tag in LINES
        if block:
            self._end_line()
        elif tag in CELLS and has_content("".join(self._line)):
            self._line.append(" | ")
        self._preformatted += tag == "pre"
        self.walk(node, in_content or tag in CONTENT)
        self._preformatted -= tag == "pre"
        if block:
            self._end_line()

    def _end_line(self) -> None:
        line = "".join(self._line)
        self._line = []
        line = line.strip("\n") if self._preformatted else line.strip()
        if has_content(line):
            self._done[-1][1].append(line)

    def sections(self) -> list[Section]:
        self._end_line()
        found = []
        for heading, lines in self._done:
            if lines:
                found.append(Section("\n".join(lines), {"heading": heading} if heading else {}))
        return found
