"""``query`` (questions to a Chroma collection), and what ``index`` (:mod:`.indexing`) shares with it.

The collection records its model and the options that change vectors (``max_length`` among them),
so an existing collection is reopened as it was made: ``--model`` and ``--max-length`` can be left
out, and a ``--model`` or an ``index --max-length`` that disagrees with the record is refused rather
than mixed in. Chroma is imported when a command runs, never for ``--help``.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from ..arguments import add_base_url, add_family_options, family_options, positive_int
from ..documents import chunk_place
from ..validation import has_content, validate_text
from .errors import UsageError
from .hybrid import add_search_options, lexical_options, search_options
from .options import PROG, remote_options
from .where import add_where_options, check_where, describe_where, open_client

EXCERPT_CHARACTERS = 300


# -- the parsers ----------------------------------------------------------------------------------


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``query`` to the sub-command set ``commands`` (``index`` is :mod:`.indexing`'s)."""
    _add_query(commands, common)


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
    collection_options(
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
    query.add_argument(
        "--json",
        action="store_true",
        help="print the hits as one JSON object (id, text, source, page, every score, the sides that "
        "found them) for scripts",
    )
    add_search_options(query, what="the chunks")
    query.set_defaults(handler=command_query)


def collection_options(parser: argparse.ArgumentParser, *, model_help: str, max_length_help: str) -> None:
    """Where the collection is (as for ``load``), and the options it records (model, length)."""
    add_where_options(parser)
    parser.add_argument("--model", default=None, help=model_help)
    parser.add_argument(
        "--max-length", type=positive_int, default=None, metavar="TOKENS", help=max_length_help
    )
    add_family_options(parser)
    add_base_url(parser)


# -- the commands ---------------------------------------------------------------------------------


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
    if args.json:
        print(json.dumps(hits_json(args.text, result.hits, options), ensure_ascii=False, indent=2))
        return 0
    if not result.hits:
        why = "is empty" if args.mode == "dense" else "has no chunk with a word of the query"
        print(f"No results: collection {args.collection!r} {why}.")
        return 0
    for rank, hit in enumerate(result.hits, 1):
        sides = "" if args.mode != "hybrid" else "  [" + _sides(hit) + "]"
        print(f"{rank}. {hit.score:.4f}  {chunk_place(hit.metadata or {}, hit.id)}{sides}")
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


def hits_json(text: str, hits: Any, options: Any) -> dict[str, Any]:
    """What ``query --json`` prints: the query, its mode, and each hit with all it carries."""
    return {
        "query": text,
        "mode": options.mode,
        "hits": [
            {
                "rank": rank,
                "id": hit.id,
                "text": hit.document,
                "source": (hit.metadata or {}).get("source"),
                **{key: (hit.metadata or {})[key] for key in PLACE_KEYS if key in (hit.metadata or {})},
                "score": hit.score,
                "score_scale": hit.score_scale,
                "dense_score": hit.dense_score,
                "lexical_score": hit.lexical_score,
                "fused_score": hit.fused_score,
                "dense_rank": hit.dense_rank,
                "lexical_rank": hit.lexical_rank,
                "found_by": list(hit.sources),
                "metadata": hit.metadata or {},
            }
            for rank, hit in enumerate(hits, 1)
        ],
    }


PLACE_KEYS = ("page", "page_label", "page_end", "title")
"""Where in its file a chunk is, when its reader says (a PDF's pages, an HTML page's title)."""


# -- opening the collection -------------------------------------------------------------------------


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
