"""An LLM reranker's pairs of one query share their first tokens: computed once, not once per pair.

Every pair of a query reads the same system prompt, instruction and query before its candidate
(Qwen3-Reranker: about a quarter of a SciFact pair's tokens). In a causal model those tokens' keys
and values do not depend on what follows, so they are computed in one pass per query and every
candidate's pass starts from them: the same logits at each pair's last token (to float rounding),
for the candidate's tokens only. What is shared is found on the token ids themselves (the longest
common prefix of the query's pairs), so a tokenizer that merges across the template's seams changes
nothing. Candidates are right padded after the shared part, positions counted on from it, and each
pair is read at its own last token.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from .batching import plan_batches

__all__ = ["by_query", "score_sharing_prefixes", "shared_length"]

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]


def by_query(queries: Sequence[str]) -> list[list[int]]:
    """Positions of the pairs of each distinct query, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for position, query in enumerate(queries):
        groups.setdefault(query, []).append(position)
    return list(groups.values())


def shared_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least its last token to compute."""
    first = rows[0]
    length = min(len(row) for row in rows) - 1
    for row in rows[1:]:
        same = 0
        while same < length and row[same] == first[same]:
            same += 1
        length = same
    return max(length, 0)


def prefix_state(decoder: Any, ids: list[int], device: torch.device) -> KeyValues:
    """The keys and values of ``ids`` in every layer (one sequence)."""
    if not ids:
        return []
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    positions = torch.arange(len(ids), device=device)[None]
    out = decoder(input_ids=input_ids, position_ids=positions, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return [(layer[0], layer[1]) for layer in cache]


def _cache_argument(decoder: Any) -> str:
    """The name a decoder's forward takes its key/value cache under (``cache`` from transformers 5.2x,
    ``past_key_values`` before); read once per model class, not once per batch."""
    return _cache_argument_of(type(decoder))


@functools.cache
def _cache_argument_of(decoder_class: type) -> str:
    parameters = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def tail_hidden(
    decoder: Any,
    state: KeyValues,
    shared: int,
    tails: list[list[int]],
    pad_token_id: int,
    device: torch.device,
) -> torch.Tensor:
    """The last hidden state of each tail read after the shared tokens (one row each)."""
    rows, width = len(tails), max(len(tail) for tail in tails)
    lengths = torch.tensor([len(tail) for tail in tails], device=device)
    input_ids = np.full((rows, width), pad_token_id, dtype=np.int64)
    mask = np.zeros((rows, shared + width), dtype=np.int64)
    mask[:, :shared] = 1
    for row, tail in enumerate(tails):
        input_ids[row, : len(tail)] = tail
        mask[row, shared : shared + len(tail)] = 1
    inputs: dict[str, Any] = {
        "input_ids": torch.from_numpy(input_ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
        "position_ids": (shared + torch.arange(width, device=device)).expand(rows, width),
    }
    if state:
        expanded = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in state]
        inputs[_cache_argument(decoder)] = DynamicCache(ddp_cache_data=expanded)
        inputs["use_cache"] = True
    else:
        inputs["use_cache"] = False
    hidden = decoder(**inputs).last_hidden_state
    return hidden[torch.arange(rows, device=device), lengths - 1]


def score_sharing_prefixes(
    token_ids: list[list[int]],
    queries: Sequence[str],
    *,
    batch_tokens: int,
    run: Callable[[list[int], Callable[[list[int]], np.ndarray]], np.ndarray],
    prefix: Callable[[list[int]], KeyValues],
    tails: Callable[[KeyValues, int, list[list[int]]], np.ndarray],
    progress: Any,
) -> np.ndarray:
    """One score per pair: per query, its shared tokens once, then its candidates' tails in batches
    planned by tokens (``run`` applies the out-of-memory rule to a batch of positions)."""
    scores = np.empty(len(token_ids), dtype=np.float32)
    for group in by_query(queries):
        shared = shared_length([token_ids[p] for p in group])
        state = prefix(token_ids[group[0]][:shared])
        rest = {p: token_ids[p][shared:] for p in group}
        lengths = [len(rest[p]) for p in group]
        for batch in plan_batches(lengths, batch_tokens):
            positions = [group[i] for i in batch]
            scores[positions] = run(
                positions, lambda part, s=state, n=shared, r=rest: tails(s, n, [r[p] for p in part])
            )
            progress.update(len(positions))
    return scores
