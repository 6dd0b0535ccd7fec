"""Planning forward passes by tokens rather than by count.

A batch costs (texts x its longest text) tokens of compute, padding included. Sorting by token length
and filling each batch up to a token budget keeps padding near zero on mixed-length RAG chunks and
keeps the memory of one pass bounded, whatever the lengths.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(
    lengths: Sequence[int], token_budget: int, *, max_padding: float = 0.1, min_batch_tokens: int = 1024
) -> list[list[int]]:
    """Group text positions into batches whose padded size stays within ``token_budget``.

    Longest texts go first, so that a batch that does not fit in memory fails at once rather than
    after an hour of work. A text longer than the budget on its own gets a batch to itself. A batch
    that already holds ``min_batch_tokens`` also closes before a text that would be padded by more
    than ``max_padding`` of its width: with a large budget and few texts, one batch would otherwise
    span very different lengths and compute mostly padding.
    """
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, not {token_budget}")
    order = sorted(range(len(lengths)), key=lambda position: -lengths[position])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for position in order:
        length = max(lengths[position], 1)
        if current and (
            width * (len(current) + 1) > token_budget
            or (width * len(current) >= min_batch_tokens and length < (1 - max_padding) * width)
        ):
            batches.append(current)
            current = []
        if not current:
            width = length
        current.append(position)
    if current:
        batches.append(current)
    return batches


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The fraction of computed token positions that are padding under ``batches``."""
    computed = sum(len(batch) * max(lengths[p] for p in batch) for batch in batches)
    real = sum(lengths)
    return 0.0 if computed == 0 else 1.0 - real / computed
