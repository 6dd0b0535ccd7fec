"""``eval retrieval|sts|rerank``: a model measured on local files with the MTEB leaderboard's metrics.

The options are checked and the data read (and checked) before the model is loaded: a typo on line
900 should not cost the minutes a 7B model takes to load.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arguments import add_base_url, add_family_options, family_options, positive_int
from ..config import DEFAULT_MODEL, EncoderConfig
from ..evaluation.second_stage import DEFAULT_RERANK_DEPTH
from .errors import UsageError, one_line
from .hybrid import add_lexical_options, add_search_options, search_options
from .options import CommandParser, remote_options

_KINDS = (
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
)
"""(kind, argument name, summary, default task) of each evaluation."""


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``eval`` and its three kinds to the sub-command set ``commands``."""
    evaluate = commands.add_parser(
        "eval",
        help="measure a model on a local test set",
        description="Measure a model on local files with the metrics of the MTEB leaderboard.",
    )
    kinds = evaluate.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=CommandParser)
    for kind, source, summary, default_task in _KINDS:
        sub = kinds.add_parser(kind, parents=[common], help=summary, description=summary + ".")
        sub.add_argument("source", metavar=source, help="the test set (formats: docs/evaluation.md)")
        # eval rerank: no --model with --rerank-model, so its default is applied later (_check_options).
        sub.add_argument(
            "--model",
            default=None if kind == "rerank" else DEFAULT_MODEL,
            help=f"model name or folder (default: {DEFAULT_MODEL})",
        )
        sub.add_argument(
            "--task",
            default=None,
            help="task type, published task name (e.g. FiQA2018) or instruction sentence "
            f"(default: {default_task})",
        )
        sub.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON to PATH")
        _encoder_options(sub)
        if kind == "retrieval":
            sub.add_argument(
                "--split",
                default="test",
                help="qrels/SPLIT.tsv when the folder has no qrels.tsv (default: test)",
            )
            add_search_options(sub, what="the documents")
            add_lexical_options(sub, new="the lexical side (--mode lexical and hybrid)")
        if kind != "sts":
            _rerank_options(sub, second_stage=kind == "retrieval")
        sub.set_defaults(handler=command_eval)


def _encoder_options(parser: argparse.ArgumentParser) -> None:
    # --device and --dtype default to None (not given), so that beside --base-url, where they mean
    # nothing, only the flags the user typed are refused.
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default: auto: bf16 on CUDA, fp32 on CPU)",
    )
    parser.add_argument(
        "--max-length", type=positive_int, default=None, help="tokens per text (default: the model's)"
    )
    parser.add_argument(
        "--batch-tokens",
        type=positive_int,
        default=EncoderConfig.model_fields["batch_tokens"].default,
        help="token budget of one forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="keep the vectors in DIR (the `cache` extra), keyed by the model and the exact text, so "
        "that a rerun over the same texts, with another task or metric, does not embed them again",
    )
    add_family_options(parser)
    add_base_url(parser)


def _rerank_options(parser: argparse.ArgumentParser, *, second_stage: bool) -> None:
    """The reranker of ``eval rerank`` (which then scores the candidates instead of an embedder) or the
    second stage of ``eval retrieval``: a reranker over the first stage's best (BEIR's protocol)."""
    parser.add_argument(
        "--rerank-model",
        default=None,
        metavar="M",
        help="rerank with model M (a cross-encoder, an LLM reranker such as Qwen3-Reranker, or an "
        "embedding model); default: "
        + ("no reranking, the first stage alone" if second_stage else "--model's embedding reranker"),
    )
    if second_stage:
        _depth_option(parser)
    parser.add_argument(
        "--rerank-max-length",
        type=positive_int,
        default=None,
        metavar="T",
        help="tokens per (query, document) pair of the reranker (default: the reranker's own)",
    )


def _depth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank-depth",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"the first stage's best N documents of each query are reranked (default with --rerank-model: "
        f"{DEFAULT_RERANK_DEPTH}, as BEIR); nDCG@10 and recall@100 are reported before and after",
    )


def command_eval(args: argparse.Namespace) -> int:
    from .. import evaluation
    from ..encoder import Encoder

    options = _check_options(args)
    data = _read_data(args)
    # Loaded before any work: a bad name fails fast.
    reranker = _reranker(args, options) if args.kind != "sts" else None
    no_embedder = (args.kind == "retrieval" and args.mode == "lexical") or (
        args.kind == "rerank" and reranker is not None
    )  # BM25 alone, or a reranker scoring the candidates: no embedder is loaded
    encoder = (
        None
        if no_embedder
        else Encoder.shared(model=args.model, batch_tokens=args.batch_tokens, show_progress=True, **options)
    )
    task_option = {} if args.task is None else {"task": args.task}
    name = Path(args.source).stem
    result: evaluation.EvaluationResult
    if args.kind == "retrieval":
        lexical = {"analyzer": args.analyzer, "lexical_engine": args.lexical_engine}
        rerank = {} if reranker is None else {"reranker": reranker, "rerank_depth": args.rerank_depth}
        result = evaluation.evaluate_retrieval(
            encoder, data, **task_option, **search_options(args), **lexical, **rerank, show_progress=True
        )
        size = f"{result.queries} queries, {result.documents} documents"
    elif args.kind == "sts":
        result = evaluation.evaluate_sts(encoder, data, name=name, **task_option)
        size = f"{result.pairs} pairs"
    else:
        scorer = reranker if reranker is not None else encoder
        result = evaluation.evaluate_reranking(scorer, data, name=name, show_progress=True, **task_option)
        size = f"{result.queries} queries, {result.candidates} candidates"
        if result.skipped_queries:
            size += f", {result.skipped_queries} without a positive skipped"
    _print_result(result, size)
    if args.json is not None:
        Path(args.json).write_text(result.to_json() + "\n", encoding="utf-8")
        print(f"\nWrote {args.json}")
    return 0


def _check_options(args: argparse.Namespace) -> dict[str, Any]:
    """The usage errors found without reading anything big: the task, the paths, the encoder flags.

    Returns the encoder options the flags give: only those given, so that a served model
    (``--base-url``) is not handed local-only options at their defaults.
    """
    from ..instructions import resolve_task

    options = {name: getattr(args, name) for name in ("device", "dtype", "max_length", "cache_dir")}
    options = {name: value for name, value in options.items() if value is not None}
    options.update(remote_options(args))
    options.update(family_options(args))
    if args.task is not None:
        try:
            resolve_task(args.task)
        except ValueError as error:
            raise UsageError(f"--task: {one_line(error)}") from None
    if args.json is not None and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    source = Path(args.source)
    if args.kind == "retrieval" and not source.is_dir():
        raise UsageError(f"{args.source}: no such folder (expected a BEIR folder with corpus.jsonl)")
    if args.kind != "retrieval" and not source.is_file():
        raise UsageError(f"{args.source}: no such file")
    if args.kind != "sts":
        _check_rerank_flags(args, options)
    return options


def _check_rerank_flags(args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Refuse a reranker flag without --rerank-model, and (``eval rerank``, where the reranker then
    scores alone) an embedder's flag beside it; give ``--model`` its default where it has none."""
    if args.rerank_model is None:
        alone = [
            flag for flag in ("rerank_depth", "rerank_max_length") if getattr(args, flag, None) is not None
        ]
        if alone:
            flag = "--" + alone[0].replace("_", "-")
            raise UsageError(
                f"{flag} sets the reranker, but no --rerank-model names one: give --rerank-model M"
            )
    elif args.kind == "rerank":
        embedder_only = [
            name for name in ("max_length", "cache_dir", "family", "dimensions") if name in options
        ]
        if args.model is not None or embedder_only:
            flag = "--model" if args.model is not None else "--" + embedder_only[0].replace("_", "-")
            raise UsageError(
                f"{flag} is the embedder's, but with --rerank-model the reranker scores the candidates "
                "and no embedder is loaded: leave it out (--rerank-max-length sets the reranker's length)"
            )
    if args.model is None:
        args.model = DEFAULT_MODEL


def _reranker(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """The reranker of --rerank-model (None without it), loaded once per process.

    The reranker runs where the encoder runs: the same --device, --dtype, --batch-tokens and
    --base-url (a served reranker is asked of the same server); --max-length is the embedder's per
    text, so a pair has its own, --rerank-max-length.
    """
    if args.rerank_model is None:
        return None
    from ..config import RerankerConfig
    from ..rerank.reranker import Reranker

    shared = {name: options[name] for name in ("device", "dtype", "base_url") if name in options}
    if args.rerank_max_length is not None:
        shared["max_length"] = args.rerank_max_length
    config = RerankerConfig(model=args.rerank_model, batch_tokens=args.batch_tokens, **shared)
    return Reranker.shared(config)


def _read_data(args: argparse.Namespace) -> Any:
    """The test set, read and checked before the model is loaded."""
    from .. import evaluation

    source = Path(args.source)
    if args.kind == "retrieval":
        return evaluation.load_beir(source, split=args.split)
    if args.kind == "sts":
        return evaluation.read_sts_pairs(source)
    return evaluation.read_rerank_samples(source)


def _print_result(result: Any, size: str) -> None:
    print(f"{result.evaluation} evaluation of {result.dataset} ({size}) in {result.seconds:.1f} s")
    mode = getattr(result, "mode", "dense")
    kind = getattr(result, "kind", "embedding")  # eval rerank's scorer: a reranker of another kind
    if mode != "lexical":
        scale = "" if kind == "embedding" else f" ({kind}, {result.score_scale} scores)"
        where = f" on {result.runtime}" if result.runtime else ""
        print(f"model {result.model}{scale}{where}, task {result.task}")
    if mode != "lexical" and kind == "embedding":
        print(f"query prefix {result.query_prefix!r}, document prefix {result.document_prefix!r}")
    if mode != "dense":
        fused = f", fused with the model's ranking by {result.fusion}" if mode == "hybrid" else ""
        print(f"mode {mode}: {result.lexical}{fused}")
    print()
    width = max(len(name) for name in result.metric_names)
    rerank = getattr(result, "rerank", None)
    if rerank is not None:
        instructed = "" if rerank.task == "none" else f", task {rerank.task}"
        what = f"{rerank.model} ({rerank.kind}, {rerank.score_scale} scores{instructed})"
        print(f"reranked by {what}: the best {rerank.depth} of each query, {rerank.pairs} pairs in "
              f"{rerank.seconds:.1f} s\n")  # fmt: skip
    print(f"{'metric':<{width}}  " + ("score" if rerank is None else "first stage  reranked"))
    for name, value in result.metrics().items():
        marker = "  (main score)" if name == result.main_metric else ""
        scores = f"{value:.5f}" if rerank is None else f"{value:<11.5f}  {rerank.metrics[name]:.5f}"
        print(f"{name:<{width}}  {scores}{marker}")
