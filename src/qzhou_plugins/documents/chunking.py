"""Cutting what the readers found into chunks, and reading a set of files into them.

Plain text and Markdown are cut exactly as before the readers existed, so their chunks keep their ids.
The sections of a PDF (its pages) or of a page under headings are joined and cut as one text, and
each chunk is traced back, by its character offsets, to the section it starts in (whose ``page`` or
``heading`` it records) and the one it ends in (``page_end`` where that is a later page): no text is
lost where a page ends, and a sentence that runs across it stays in one chunk.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..lexical.analyzers import CJK_RUN
from ..validation import has_content
from .errors import BinaryDocumentError, BrokenDocumentError
from .fields import Metadata
from .finding import source_name
from .ids import content_id
from .readers import Reading, Section, reader_for

CHUNK_SIZE = 1000
"""Characters per chunk: about 200-250 tokens of English, under the 256-token limit of the demo model
and a good retrieval grain for QZhou too."""
CHUNK_OVERLAP = 100
SENTENCE_END = (
    r"(?<=[。｡．！？；…!?;])(?![”’」』）》])"  # after a sentence end, unless a closing quote follows
    r"|(?<=[。｡．！？；…!?;][”’」』）》])"  # or after that closing quote
)
"""Where a text with Chinese (or Japanese) sentences may be cut when a paragraph is too long: after 。！？；
(and their kin ｡．…!?;), which Chinese writes with no space after them for the splitter to fall back on."""
CLAUSE_END = r"(?<=[，、：])"
"""Where such a text may be cut when one sentence is too long: after a comma (，、) or a colon (：)."""


@dataclass(frozen=True)
class Chunk:
    text: str
    metadata: Metadata

    @property
    def id(self) -> str:
        """The id ``index`` stores the chunk under (its content id), which ``embed`` gives it too."""
        return content_id(self.text, self.metadata)


@dataclass
class FileChunks:
    """The chunks of one file, and what was read of it only in part (each warning names the file)."""

    chunks: list[Chunk]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Documents:
    """What reading the files gave: the chunks, and the files that gave none or only part (and why)."""

    chunks: list[Chunk] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    """Files with no visible text."""
    binary: list[tuple[Path, str]] = field(default_factory=list)
    """Files skipped as binary, each with the reason to print."""
    broken: list[tuple[Path, str]] = field(default_factory=list)
    """Files skipped as encrypted or damaged, each with the reason to print."""
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    """Files read in part (a PDF's scanned pages), each with the warning to print."""

    @property
    def skipped(self) -> int:
        """How many files gave nothing because they could not be read (binary, encrypted, damaged)."""
        return len(self.binary) + len(self.broken)

    def skipped_kinds(self) -> str:
        """``2 binary, 1 encrypted or damaged``: what the skipped files were."""
        kinds = [(len(self.binary), "binary"), (len(self.broken), "encrypted or damaged")]
        return ", ".join(f"{count} {kind}" for count, kind in kinds if count)


def read_documents(
    files: Sequence[Path], chunk_size: int, chunk_overlap: int, *, named: Collection[Path] = ()
) -> Documents:
    """The chunks of every file, binary, encrypted and damaged files set aside with their reasons.

    A file in ``named`` (resolved: one the user named directly, not found in a folder) that is encrypted or
    damaged stops the reading: its :class:`BrokenDocumentError` is raised. Any other problem stops it too.
    """
    documents = Documents()
    for file in tqdm(files, desc="Reading", unit="file", disable=len(files) < 10):
        try:
            found = read_file(file, chunk_size, chunk_overlap)
        except BinaryDocumentError as error:
            documents.binary.append((file, str(error)))
            continue
        except BrokenDocumentError as error:
            if file.resolve() in named:
                raise
            documents.broken.append((file, str(error)))
            continue
        documents.warnings.extend((file, warning) for warning in found.warnings)
        if not found.chunks:
            documents.empty.append(file)
        documents.chunks.extend(found.chunks)
    return documents


def read_chunks(file: Path, chunk_size: int, chunk_overlap: int, *, source: str | None = None) -> list[Chunk]:
    """The chunks of one file (:func:`read_file` without its warnings)."""
    return read_file(file, chunk_size, chunk_overlap, source=source).chunks


def read_file(file: Path, chunk_size: int, chunk_overlap: int, *, source: str | None = None) -> FileChunks:
    """The chunks of one file, each with its source path and chunk number in the metadata.

    ``.md`` files are split on Markdown structure first (headings, then paragraphs), other text on
    paragraphs, then lines, then words: LangChain's recursive splitter, the common choice. In a
    ``.jsonl`` file every line is a JSON object with a ``text`` field; its other fields become
    metadata (``line`` records where it came from). Chunks with no visible character are dropped:
    they would all get the vector of an empty text. ``source`` is the name recorded (by default
    :func:`source_name`): a Ray worker, whose working directory is not the caller's, is given it.
    """
    reading = reader_for(file)(file)
    source = source_name(file) if source is None else source
    return FileChunks(chunk_reading(reading, source, chunk_size, chunk_overlap), reading.warnings)


def chunk_reading(reading: Reading, source: str, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """The chunks of what a reader found, numbered from 0 in the file (per record in a ``.jsonl``)."""
    if reading.cut == "records":
        chunks = []
        for section in reading.sections:
            splitter = _splitter(reading.markdown, chunk_size, chunk_overlap, section.text)
            for number, piece in enumerate(splitter.split_text(section.text)):
                if has_content(piece):
                    metadata = {**reading.metadata, **section.metadata, "source": source, "chunk": number}
                    chunks.append(Chunk(piece, metadata))
        return chunks
    text = reading.joiner.join(section.text for section in reading.sections)
    splitter = _splitter(reading.markdown, chunk_size, chunk_overlap, text)
    starts = _section_starts(reading.sections, len(reading.joiner))
    chunks = []
    at = 0
    for number, piece in enumerate(splitter.split_text(text)):
        found = text.find(piece, at)
        at = found + 1 if found >= 0 else at
        if not has_content(piece):
            continue
        where = _place(reading.sections, starts, max(found, 0), len(piece))
        chunks.append(Chunk(piece, {**reading.metadata, **where, "source": source, "chunk": number}))
    return chunks


def _section_starts(sections: Sequence[Section], joiner: int) -> list[int]:
    starts, at = [], 0
    for section in sections:
        starts.append(at)
        at += len(section.text) + joiner
    return starts


def _place(sections: Sequence[Section], starts: list[int], start: int, length: int) -> Metadata:
    """The metadata of the section a chunk starts in, and ``page_end`` if it ends on a later page."""
    if not sections:
        return {}
    first = sections[max(bisect.bisect_right(starts, start) - 1, 0)]
    last = sections[max(bisect.bisect_right(starts, start + length - 1) - 1, 0)]
    metadata = dict(first.metadata)
    page, page_end = first.metadata.get("page"), last.metadata.get("page")
    if isinstance(page_end, int) and page_end != page:
        metadata["page_end"] = page_end
    return metadata


def chunk_place(metadata: dict[str, Any], default: str = "?") -> str:
    """Where a chunk is, as ``query`` prints it: ``notes.jsonl:3 (chunk 0)``, ``manual.pdf p. 23 (chunk 4)``.

    A PDF chunk on one page shows its label where the file has one; one that runs on shows the range of
    page numbers (the label of its last page is not recorded)."""
    where = str(metadata.get("source", default))
    if "line" in metadata:
        where += f":{metadata['line']}"
    if "page_end" in metadata:
        where += f" pp. {metadata['page']}-{metadata['page_end']}"
    elif "page" in metadata:
        where += f" p. {metadata.get('page_label', metadata['page'])}"
    if "chunk" in metadata:
        where += f" (chunk {metadata['chunk']})"
    return where


def _splitter(markdown: bool, chunk_size: int, chunk_overlap: int, text: str) -> Any:
    """LangChain's recursive splitter (Markdown-aware for ``.md``).

    A text with Chinese or Japanese characters is also cut at sentence ends (:data:`SENTENCE_END`),
    then at commas (:data:`CLAUSE_END`), before the splitter falls back on spaces and then on single
    characters; any other text is cut exactly as before, so that its chunks keep their ids.
    """
    try:
        from langchain_text_splitters import Language, RecursiveCharacterTextSplitter
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "chunking documents needs langchain-text-splitters: pip install 'qzhou-plugins[cli]'"
        ) from error
    if not CJK_RUN.search(text):
        if markdown:
            return RecursiveCharacterTextSplitter.from_language(
                Language.MARKDOWN, chunk_size=chunk_size, chunk_overlap=chunk_overlap
            )
        return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    separators = (
        RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
        if markdown
        else ["\n\n", "\n", " ", ""]
    )
    at_space = separators.index(" ")
    return RecursiveCharacterTextSplitter(
        separators=[*separators[:at_space], SENTENCE_END, CLAUSE_END, *separators[at_space:]],
        is_separator_regex=True,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
    )
