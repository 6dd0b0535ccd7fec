"""Evaluation files as plots: ``qzhou-plugins eval retrieval ... --json`` outputs, read and compared.

Each file is one run, or two when a reranker took part (the first stage, then the same run after the
rerank): so a file of a reranked evaluation alone shows, query by query, what the reranker changed.
The bars compare every run's nDCG@10 and recall@100; the scatter puts two runs' per-query nDCG@10
against each other (above the diagonal: the second run did better on that query); the worst queries
of the second run are listed with their first results. Files written before per-query figures were
kept give bars only, and say so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cli.errors import UsageError, one_line
from . import plots

WORST_QUERIES = 10
MAX_FILES = 50
"""The most evaluation files one plot request takes (a page of bars stays readable)."""


def read_files(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """``--eval`` files (a folder: its ``*.json``) as ``{"name", "result"}`` for the page to plot."""
    found = []
    for path in paths:
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        for file in files:
            try:
                found.append({"name": file.name, "result": json.loads(file.read_text("utf-8"))})
            except (OSError, ValueError) as error:
                raise UsageError(f"--eval {file}: {one_line(error)}") from None
    return found


def runs_of(files: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runs of evaluation files: a first stage each, and the rerank after it where there is one."""
    from pydantic import ValidationError

    from ..evaluation.results import RetrievalResult

    if not isinstance(files, list) or not files:
        raise UsageError("no evaluation file given: open one or more `eval retrieval ... --json` outputs")
    if len(files) > MAX_FILES:
        raise UsageError(f"{len(files)} evaluation files; the page plots at most {MAX_FILES} at once")
    runs = []
    for file in files:
        name = str(file.get("name") or "evaluation") if isinstance(file, Mapping) else "evaluation"
        content = file.get("result") if isinstance(file, Mapping) else None
        if isinstance(content, Mapping) and content.get("evaluation") not in (None, "retrieval"):
            raise UsageError(
                f"{name}: an {content.get('evaluation')} evaluation; the plots are of retrieval ones "
                "(`eval retrieval ... --json`), which have nDCG@10 and recall@100"
            )
        try:
            result = RetrievalResult.model_validate(content)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors()[:3]
            )
            raise UsageError(f"{name}: not an `eval retrieval --json` result ({problems})") from None
        runs += _runs(name, result)
    return runs


def _runs(name: str, result: Any) -> list[dict[str, Any]]:
    first = f"{Path(name).stem}: {result.mode}" + (f" ({result.fusion})" if result.fusion else "")
    found = [{"label": first, "ndcg_at_10": result.ndcg_at_10, "recall_at_100": result.recall_at_100,
              "per_query": {q: f.model_dump() for q, f in result.per_query.items()}}]  # fmt: skip
    if result.rerank is not None:
        stage = result.rerank
        found.append({"label": f"{first} + rerank {Path(stage.model).name}",
                      "ndcg_at_10": stage.metrics["ndcg_at_10"],
                      "recall_at_100": stage.metrics["recall_at_100"],
                      "per_query": {q: f.model_dump() for q, f in stage.per_query.items()}})  # fmt: skip
    return found


def plot(
    files: Sequence[Mapping[str, Any]], first: int | None = None, second: int | None = None
) -> dict[str, Any]:
    """The bars of every run, and the scatter and worst queries of runs ``first`` and ``second`` (by
    default the first two runs)."""
    runs = runs_of(files)
    answer: dict[str, Any] = {
        "runs": [
            {
                "label": r["label"],
                "ndcg_at_10": r["ndcg_at_10"],
                "recall_at_100": r["recall_at_100"],
                "queries": len(r["per_query"]),
            }
            for r in runs
        ],
        "bars": plots.bars([(r["label"], r["ndcg_at_10"], r["recall_at_100"]) for r in runs]),
        "scatter": None,
        "worst": [],
        "note": None,
    }
    a, b = _pair(runs, first, second)
    shown = runs[b if b is not None else a]["per_query"]
    answer["worst"] = worst_queries(shown)
    if b is None:
        answer["note"] = "one run: open a second file (or a reranked one) for the per-query scatter"
    elif not runs[a]["per_query"] or not shown:
        answer["note"] = (
            "written before per-query figures were kept: run the evaluation again for the scatter"
        )
    else:
        common = [q for q in runs[a]["per_query"] if q in shown]
        points = [
            (q, shown[q]["query"], runs[a]["per_query"][q]["ndcg_at_10"], shown[q]["ndcg_at_10"])
            for q in common
        ]
        answer["scatter"] = plots.scatter(points, runs[a]["label"], runs[b]["label"])
        answer["pair"] = [a, b]
    return answer


def worst_queries(
    per_query: Mapping[str, Mapping[str, Any]], most: int = WORST_QUERIES
) -> list[dict[str, Any]]:
    """The queries with the lowest nDCG@10 (then recall@100), with their first results."""
    ordered = sorted(
        per_query.items(), key=lambda item: (item[1]["ndcg_at_10"], item[1]["recall_at_100"], item[0])
    )
    return [{"id": query_id, **figures} for query_id, figures in ordered[:most]]


def _pair(runs: list[dict[str, Any]], first: int | None, second: int | None) -> tuple[int, int | None]:
    """The two runs of the scatter: those asked for (checked), else the first two."""
    for value, what in ((first, "first"), (second, "second")):
        if value is not None and (not isinstance(value, int) or not 0 <= value < len(runs)):
            raise UsageError(f"{what} run {value!r}: there are {len(runs)} run(s), numbered from 0")
    if len(runs) == 1:
        return 0, None
    a = 0 if first is None else first
    b = (1 if a == 0 else 0) if second is None else second
    return a, b
