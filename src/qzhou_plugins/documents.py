"""The documents ``index`` and ``embed`` read: finding the files, reading them as text, cutting them
into chunks, and the id each chunk is stored under.

What a user hands to an indexer is rarely clean: a folder holds a binary file with a ``.txt`` name, a
JSON-lines export carries ``NaN`` (which Python's json module parses) or a 20-digit id. Each such
problem is caught here, before a model is loaded or anything is written, and named by its file and
line: a binary file is skipped with a warning (as grep and git treat one), anything else in a file
the user gave is an error, since indexing it would silently lose or change what they gave.

The module is neutral ground between the edges: ``qzhou-plugins index`` (the CLI), the bulk job's
documents source and the evaluation's BEIR reader all use it, and it imports none of them. The one
framework piece, LangChain's text splitter, is imported when a file is chunked.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .jsonlines import json_objects_in_text
from .lexical.analyzers import CJK_RUN
from .metadata import INT64_MAX, INT64_MIN, check_metadata
from .validation import find_lone_surrogate, has_content

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl")
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

Metadata = dict[str, str | int | float | bool]

_OUR_KEYS = ("source", "line", "chunk")
_RESERVED_PREFIX = "chroma:"
"""Chroma reserves metadata keys starting with this (``chroma:document``)."""


class DocumentError(ValueError):
    """A document cannot be found, read or used as it is; the message names the file (and line)."""


class UnreadableDocumentError(DocumentError):
    """A file or folder cannot be read (an I/O error): a failure while working, not a wrong path."""


class BinaryDocumentError(DocumentError):
    """The file is not text (it holds NUL bytes): ``index`` skips it with a warning."""


@dataclass(frozen=True)
class Chunk:
    text: str
    metadata: Metadata

    @property
    def id(self) -> str:
        """The id ``index`` stores the chunk under (its content id), which ``embed`` gives it too."""
        return content_id(self.text, self.metadata)


def content_id(text: str, metadata: Mapping[str, Any] | None) -> str:
    """The default id: a hash of the text and its metadata, so that re-adding the same record is a no-op.

    The metadata takes part so that one text from two sources stays two records.
    """
    canonical = json.dumps([text, dict(metadata or {})], sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def join_text_fields(values: Iterable[str]) -> str:
    """The text of a corpus record: its fields (title, then text) joined with a space, stripped.

    This is how BEIR and MTEB embed a corpus, so the evaluation and the bulk job both call it: vectors
    made by ``embed`` are the ones ``eval retrieval`` would make. A record without a title gives its
    text alone, not one with a leading space.
    """
    return " ".join(values).strip()


@dataclass
class Documents:
    """What reading the files gave: the chunks, and the files that gave none (and why)."""

    chunks: list[Chunk] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)
    """Files with no visible text."""
    binary: list[tuple[Path, str]] = field(default_factory=list)
    """Files skipped as binary, each with the reason to print."""


def find_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to index: each file given, and the supported files under each folder (sorted).

    Hidden files and folders (``.git``, ``.venv``) are skipped when walking; a missing path, a path
    that is neither a file nor a folder (a FIFO, a device), a folder with no supported file or a file
    of an unsupported kind named explicitly is a :class:`DocumentError` (the CLI's usage error).
    """
    files: list[Path] = []
    for given in paths:
        try:
            files.extend(_files_of(Path(given), given))
        except OSError as error:  # an I/O error on a file's or folder's entry: as when reading a file
            raise UnreadableDocumentError(
                f"{error.filename or given}: cannot be read ({error.strerror or error})"
            ) from None
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def _files_of(path: Path, given: str | Path) -> list[Path]:
    """The file ``given`` names, or the supported files under the folder it names."""
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DocumentError(
                f"{given}: unsupported file type (index reads {', '.join(SUPPORTED_SUFFIXES)})"
            )
        return [path]
    if path.is_dir():
        found = sorted(
            candidate
            for candidate in path.rglob("*")
            if candidate.is_file()
            and candidate.suffix.lower() in SUPPORTED_SUFFIXES
            and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
        )
        if not found:
            raise DocumentError(f"{given}: no {', '.join(SUPPORTED_SUFFIXES)} files in this folder")
        return found
    if path.exists():
        raise DocumentError(f"{given}: not a regular file or a folder")
    raise DocumentError(f"{given}: no such file or folder")


def read_documents(files: Sequence[Path], chunk_size: int, chunk_overlap: int) -> Documents:
    """The chunks of every file, binary files set aside; any other problem stops the reading."""
    documents = Documents()
    for file in tqdm(files, desc="Reading", unit="file", disable=len(files) < 10):
        try:
            found = read_chunks(file, chunk_size, chunk_overlap)
        except BinaryDocumentError as error:
            documents.binary.append((file, str(error)))
            continue
        if not found:
            documents.empty.append(file)
        documents.chunks.extend(found)
    return documents


def read_chunks(file: Path, chunk_size: int, chunk_overlap: int, *, source: str | None = None) -> list[Chunk]:
    """The chunks of one file, each with its source path and chunk number in the metadata.

    ``.md`` files are split on Markdown structure first (headings, then paragraphs), ``.txt`` on
    paragraphs, then lines, then words: LangChain's recursive splitter, the common choice. In a
    ``.jsonl`` file every line is a JSON object with a ``text`` field; its other fields become
    metadata (``line`` records where it came from). Chunks with no visible character are dropped:
    they would all get the vector of an empty text. ``source`` is the name recorded (by default
    :func:`source_name`): a Ray worker, whose working directory is not the caller's, is given it.
    """
    source = source_name(file) if source is None else source
    content = read_text(file)
    if file.suffix.lower() != ".jsonl":
        splitter = _splitter(file, chunk_size, chunk_overlap, content)
        return [
            Chunk(text, {"source": source, "chunk": number})
            for number, text in enumerate(splitter.split_text(content))
            if has_content(text)
        ]
    chunks: list[Chunk] = []
    expected = "a JSON object with a 'text' field"
    for line_number, record in json_objects_in_text(content, file, expected=expected):
        where = f"{file}:{line_number}"
        text = record.pop("text", None)
        if not isinstance(text, str) or not has_content(text):
            raise DocumentError(f"{where}: the 'text' field is missing or has no visible text")
        _check_unicode(text, where, "the 'text' field")
        fields = metadata_fields(record, where)
        splitter = _splitter(file, chunk_size, chunk_overlap, text)
        for number, piece in enumerate(splitter.split_text(text)):
            if has_content(piece):
                chunks.append(
                    Chunk(piece, {**fields, "source": source, "line": line_number, "chunk": number})
                )
    return chunks


def _splitter(file: Path, chunk_size: int, chunk_overlap: int, text: str) -> Any:
    """LangChain's recursive splitter for the file's kind (Markdown-aware for ``.md``).

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
    markdown = file.suffix.lower() == ".md"
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


def read_text(file: Path) -> str:
    """The file's text, UTF-8 (a byte-order mark is allowed); every failure names the file as given."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise UnreadableDocumentError(f"{file}: cannot be read ({error.strerror or error})") from None
    if b"\0" in data:
        raise BinaryDocumentError(
            f"{file}: skipped, a binary file (it holds NUL bytes; UTF-16 text must be converted to UTF-8)"
        )
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        at = bom + error.start
        line = data.count(b"\n", 0, at) + 1
        raise DocumentError(f"{file} is not UTF-8 text ({error.reason} at byte {at}, line {line})") from None


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


def metadata_fields(record: dict[str, Any], where: str, *, ours: Sequence[str] = _OUR_KEYS) -> Metadata:
    """A record's fields as Chroma metadata: scalars as they are, anything else as JSON text.

    A field named like one of ``ours`` (the keys a chunk's metadata adds: ``source``, ``line``,
    ``chunk``) or like Chroma's reserved ``chroma:`` keys is kept as ``record_<name>``; a record that
    also has a field of that name is refused, as one of the two would be lost. A value Chroma would
    change (NaN and infinities are stored as nothing, integers beyond 64 bits as floats) is refused,
    naming ``where`` and the field; so is anything else ``QZhouCollection.add`` would refuse (a key
    starting with ``#`` or ``$``), here, where the message can name the file and line.
    """
    fields: Metadata = {}
    given: dict[str, str] = {}  # the name each field is stored under -> the field's own name
    for key, value in record.items():
        if not key.strip():
            raise DocumentError(f"{where}: a field has an empty name ({key!r}); Chroma needs a name")
        _check_unicode(key, where, f"the field name {key!r}")
        _check_value(value, where, key)
        reserved = key in ours or key.startswith(_RESERVED_PREFIX)
        name = f"record_{key}" if reserved else key
        if name in given:
            raise DocumentError(
                f"{where}: fields {given[name]!r} and {key!r} would both be stored as {name!r} (one would be "
                "lost); rename one"
            )
        given[name] = key
        if isinstance(value, (str, int, float, bool)):
            fields[name] = value
        else:
            fields[name] = json.dumps(value, ensure_ascii=False)
    try:
        check_metadata(fields, f"{where}: metadata")  # the rules of QZhouCollection.add, named here
    except (TypeError, ValueError) as error:
        raise DocumentError(str(error)) from None
    return fields


def _check_value(value: Any, where: str, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise DocumentError(
            f"{where}: field {key!r} is {json.dumps(value)}, not a number Chroma can store (it would be "
            "dropped); give a finite number, or quote it to keep it as text"
        )
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise DocumentError(
            f"{where}: field {key!r} is {value}, beyond the 64-bit integers Chroma stores (it would "
            "become a float that no filter finds); quote it to keep it as text"
        )
    if isinstance(value, (list, dict)):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise DocumentError(
                f"{where}: field {key!r} holds NaN or Infinity, which JSON text cannot carry"
            ) from None
        _check_unicode(text, where, f"field {key!r}")
    elif isinstance(value, str):
        _check_unicode(value, where, f"field {key!r}")


def _check_unicode(text: str, where: str, what: str) -> None:
    """Refuse a lone surrogate (a JSON escape such as ``\\ud800``): it cannot be stored as UTF-8."""
    at = find_lone_surrogate(text)
    if at is not None:
        raise DocumentError(
            f"{where}: {what} holds a lone surrogate {text[at]!r} at character {at} (not valid Unicode)"
        )
