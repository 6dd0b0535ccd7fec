"""``index`` and ``query``: documents into a Chroma collection, and questions to it.

The collection records its model and the options that change vectors (``max_length`` among them),
so an existing collection is reopened as it was made: ``--model`` and ``--max-length`` can be left
out, and a ``--model`` or an ``index --max-length`` that disagrees with the record is refused rather
than mixed in. Chroma is imported when a command runs, never for ``--help``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from tqdm.auto import tqdm

from ..arguments import add_base_url, add_family_options, family_options, positive_int
from ..config import DEFAULT_MODEL
from ..documents import CHUNK_OVERLAP, CHUNK_SIZE, read_documents
from ..validation import has_content, validate_text
from .documents import find_documents
from .errors import DocumentError, UsageError
from .hybrid import add_lexical_options, add_search_options, lexical_options, search_options
from .options import PROG, remote_options
from .where import add_where_options, check_where, describe_where, open_client

ADD_BATCH = 128
"""Chunks handed to the collection per call: small enough for a progress bar that moves, and an
interrupted run keeps everything added so far (the next run skips it)."""
EXCERPT_CHARACTERS = 300


# -- the parsers ----------------------------------------------------------------------------------


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``index`` and ``query`` to the sub-command set ``commands``."""
    _add_index(commands, common)
    _add_query(commands, common)


def _add_index(commands: Any, common: argparse.ArgumentParser) -> None:
    index = commands.add_parser(
        "index",
        parents=[common],
        help="add .txt, .md, .jsonl, .pdf, .html and .docx files to a Chroma collection",
        description="Split files into chunks and add them to a Chroma collection (created if needed). "
        "Folders are walked. Chunks are identified by their content, so running it again adds only "
        "what is new and an interrupted run can simply be restarted. In .jsonl files each line is a "
        "JSON object with a 'text' field; the other fields are kept as metadata. PDF chunks record "
        "their page. Binary, encrypted and damaged files in a folder are skipped with a warning. "
        "A lexical (BM25) index of the chunks is kept beside the collection, "
        "for `query --mode lexical` and `--mode hybrid`.",
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to index")
    _collection_options(
        index,
        model_help=f"embedding model for a new collection (default: {DEFAULT_MODEL}); an existing "
        "collection keeps the model it was created with, and a different one is refused",
        max_length_help="tokens per chunk, instruction included, for a new collection (default: the "
        "model's); an existing collection keeps the length it was created with, and a different one "
        "is refused",
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
    add_lexical_options(index, new="a new collection's lexical index")
    index.set_defaults(handler=command_index)


def _add_query(commands: Any, common: argparse.ArgumentParser) -> None:
    query = commands.add_parser(
        "query",
        parents=[common],
        help="search a collection and print the best chunks",
        description="Embed the question on the query side (with the collection's instruction) and print "
        "the closest chunks with their scores and sources; or rank by words (--mode lexical), or by "
        "both (--mode hybrid).",
    )
    query.add_argument("text", metavar="TEXT", help="the question or search text")
    _collection_options(
        query,
        model_help="expected model (default: the one the collection was indexed with); a mismatch is refused",
        max_length_help="tokens of the question (and of each reranked chunk), instruction included "
        "(default: what the collection was indexed with); the stored vectors are not affected",
    )
    query.add_argument("-k", type=int, default=5, help="number of chunks to print (default: %(default)s)")
    query.add_argument(
        "--rerank",
        dest="rerank_candidates",
        type=int,
        default=None,
        metavar="N",
        help="fetch N candidates and rerank them (with --rerank-model, else the collection's own model) "
        "before keeping the best k",
    )
    query.add_argument(
        "--rerank-model",
        default=None,
        metavar="M",
        help="rerank with model M (a cross-encoder, an LLM reranker such as Qwen3-Reranker, or an "
        "embedding model); default: the collection's own model",
    )
    add_search_options(query, what="the chunks")
    query.set_defaults(handler=command_query)


def _collection_options(parser: argparse.ArgumentParser, *, model_help: str, max_length_help: str) -> None:
    """Where the collection is (as for ``load``), and the options it records (model, length)."""
    add_where_options(parser)
    parser.add_argument("--model", default=None, help=model_help)
    parser.add_argument(
        "--max-length", type=positive_int, default=None, metavar="TOKENS", help=max_length_help
    )
    add_family_options(parser)
    add_base_url(parser)


# -- the commands ---------------------------------------------------------------------------------


def command_index(args: argparse.Namespace) -> int:
    if args.chunk_size < 1 or not 0 <= args.chunk_overlap < args.chunk_size:
        raise UsageError("--chunk-size must be positive and --chunk-overlap between 0 and the chunk size")
    check_where(args)
    found = find_documents(args.paths)
    files = found.files
    documents = read_documents(files, args.chunk_size, args.chunk_overlap, named=found.named)
    for _file, reason in [*documents.binary, *documents.broken, *documents.warnings]:
        print(f"warning: {reason}", file=sys.stderr)
    if found.skipped_line():
        print(found.skipped_line(), file=sys.stderr)
    if not documents.chunks:
        skipped = f" ({documents.skipped_kinds()}, skipped)" if documents.skipped else ""
        raise DocumentError(f"nothing to index: the {len(files)} file(s) hold no text{skipped}")
    collection = _open_for_index(args)
    added = skipped_chunks = 0
    chunks = documents.chunks
    with tqdm(total=len(chunks), desc="Indexing", unit="chunk") as progress:
        for start in range(0, len(chunks), ADD_BATCH):
            batch = chunks[start : start + ADD_BATCH]
            result = collection.add(
                [c.text for c in batch], metadatas=[c.metadata for c in batch], show_progress=False
            )
            added += result.added
            skipped_chunks += result.skipped
            progress.update(len(batch))
    read = len(files) - documents.skipped
    print(
        f"Indexed {read} file(s) into collection {args.collection!r} ({describe_where(args)}): "
        f"{added} chunk(s) added, {skipped_chunks} already there; the collection holds {collection.count()}."
    )
    print(_lexical_index_line(collection))
    if documents.empty:
        print(f"{len(documents.empty)} file(s) had no text.")
    if documents.binary:
        print(f"{len(documents.binary)} binary file(s) skipped.")
    return 0


def _lexical_index_line(collection: Any) -> str:
    """Where the collection's lexical index is (built now for a collection made before it had one)."""
    if collection.lexical.folder is None:
        return (
            "No lexical index: a collection on a Chroma server keeps one only where --lexical-dir says "
            "(needed by query --mode lexical and hybrid)."
        )
    index = collection.lexical_index()
    return (
        f"Lexical index ({collection.analyzer} analyzer, {collection.lexical_engine}, {index.count()} "
        f"chunk(s)): {collection.lexical.folder}"
    )


def command_query(args: argparse.Namespace) -> int:
    check_where(args)
    if not has_content(args.text):
        raise UsageError("the query text is empty (it has no visible character)")
    try:  # the rules every edge shares, before any model is loaded (a lone surrogate: a non-UTF-8 byte)
        validate_text(args.text, what="the query text")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.k < 1:
        raise UsageError("-k must be at least 1")
    candidates = args.rerank_candidates
    if candidates is not None and candidates < args.k:
        raise UsageError(f"--rerank {candidates} must be at least -k ({args.k}): it is how many to rerank")
    if args.rerank_model is not None and candidates is None:
        raise UsageError("--rerank-model needs --rerank N: how many of the best chunks to rerank")
    from ..chroma import QueryOptions

    reranker: Any = args.rerank_model
    if reranker is not None and getattr(args, "base_url", None) is not None:
        from ..config import RerankerConfig

        reranker = RerankerConfig(model=reranker, base_url=args.base_url)  # asked of the same server
    options = QueryOptions(n_results=args.k, rerank_candidates=candidates, reranker=reranker,
                           **search_options(args))  # fmt: skip
    encoder_options = {} if args.max_length is None else {"max_length": args.max_length}
    collection = open_collection(args, create=False, **encoder_options)
    (result,) = collection.query([args.text], options)
    if not result.hits:
        why = "is empty" if args.mode == "dense" else "has no chunk with a word of the query"
        print(f"No results: collection {args.collection!r} {why}.")
        return 0
    for rank, hit in enumerate(result.hits, 1):
        sides = "" if args.mode != "hybrid" else "  [" + _sides(hit) + "]"
        print(f"{rank}. {hit.score:.4f}  {_hit_source(hit.id, hit.metadata or {})}{sides}")
        excerpt = " ".join((hit.document or "").split())
        if len(excerpt) > EXCERPT_CHARACTERS:
            excerpt = excerpt[: EXCERPT_CHARACTERS - 1].rstrip() + "…"
        print(textwrap.indent(textwrap.fill(excerpt, width=100), "   "))
    print(scores_line(result.hits[0].score_scale, options, collection))
    return 0


SCALES = {
    "cosine": "cosine similarity (-1 to 1)",
    "probability": "probability of relevance (0 to 1)",
    "logit": "logit (unbounded; higher is more relevant)",
    "bm25": "BM25 (unbounded)",
    "rrf": "reciprocal-rank fusion of the dense and lexical ranks",
    "weighted": "weighted fusion of the normalised dense and lexical scores (0 to 1)",
}
"""What each score scale is, in words, for the line under the results."""


def scores_line(scale: str, options: Any, collection: Any) -> str:
    """Which scale the printed scores are on, and which model reranked them."""
    line = f"Scores: {SCALES.get(scale, scale)}"
    if options.rerank_candidates is None:
        return line + "."
    reranker = options.scorer(collection.encoder)
    return (
        f"{line}, reranked by {reranker.model_name} ({reranker.kind}) among the best "
        f"{options.fetch} candidates."
    )


def _sides(hit: Any) -> str:
    """What each side of a hybrid query said of a hit: ``dense 0.7123, lexical 8.21``."""
    said = []
    if hit.dense_score is not None:
        said.append(f"dense {hit.dense_score:.4f}")
    if hit.lexical_score is not None:
        said.append(f"lexical {hit.lexical_score:.2f}")
    return ", ".join(said)


def _hit_source(hit_id: str, metadata: dict[str, Any]) -> str:
    """``path:line (chunk n)``: where a hit came from, as ``index`` recorded it."""
    where = str(metadata.get("source", hit_id))
    if "line" in metadata:
        where += f":{metadata['line']}"
    if "chunk" in metadata:
        where += f" (chunk {metadata['chunk']})"
    return where


# -- opening the collection -------------------------------------------------------------------------


def _open_for_index(args: argparse.Namespace) -> Any:
    """The collection to add to: created with ``--max-length`` if new, refused if it disagrees."""
    if args.max_length is None:
        return open_collection(args, create=True)
    from ..chroma import CollectionNotFoundError

    try:
        collection = open_collection(args, create=False, missing_ok=True)
    except CollectionNotFoundError:
        return open_collection(args, create=True, max_length=args.max_length)
    recorded = collection.encoder.max_length
    if recorded != args.max_length:
        raise ValueError(
            f"collection {args.collection!r} embeds its chunks with max_length {recorded}, as it was "
            f"created; --max-length {args.max_length} would embed new chunks differently, and the chunks "
            "already there would not be embedded again. Leave --max-length out, or index into a new "
            f"collection (--collection OTHER --max-length {args.max_length})"
        )
    return collection


def open_collection(
    args: argparse.Namespace, *, create: bool, missing_ok: bool = False, **options: Any
) -> Any:
    """Open ``--collection`` where ``--db``/``--host`` say; ``options`` go to the encoder.

    ``missing_ok`` lets :class:`~qzhou_plugins.chroma.CollectionNotFoundError` through for the caller
    to create the collection; otherwise a missing database or collection is a one-line error. With
    ``--base-url`` the chunks are embedded by the served model; the collection records the same
    model (the name the server serves it under), so it can be reopened with the model loaded here.
    """
    from ..chroma import CollectionNotFoundError, QZhouCollection

    options = {**remote_options(args), **family_options(args), **lexical_options(args), **options}
    client = open_client(args, create=create or missing_ok)
    try:
        return QZhouCollection.open(
            args.collection, client=client, model=args.model, create=create, **options
        )
    except CollectionNotFoundError:
        if missing_ok:
            raise
        raise ValueError(
            f"no collection named {args.collection!r} in {describe_where(args)}; create it with "
            f"`{PROG} index PATH --collection {args.collection}`"
        ) from None
