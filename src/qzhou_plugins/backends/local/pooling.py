"""Reducing a batch of token states to one vector per text, for left- or right-padded batches.

Pooling is done in float32 whatever the model's dtype: a mean over thousands of bf16 states loses
digits that the vector keeps otherwise.
"""

from __future__ import annotations

import torch

from ...config import Pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Pool ``hidden`` (batch, tokens, dim) over the real tokens marked 1 in ``mask`` (batch, tokens).

    ``cls`` is the first real token and ``last`` the last real one, so both work whichever side the
    padding is on.
    """
    states = hidden.float()
    weights = mask.to(states.dtype)
    if mode == "mean":
        total = (states * weights.unsqueeze(-1)).sum(dim=1)
        return total / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)
    rows = torch.arange(states.shape[0], device=states.device)
    if mode == "cls":
        return states[rows, mask.int().argmax(dim=1)]
    if mode == "last":
        last = mask.shape[1] - 1 - mask.int().flip(dims=[1]).argmax(dim=1)
        return states[rows, last]
    if mode == "max":
        return states.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).max(dim=1).values
    raise ValueError(f"unknown pooling {mode!r}; expected mean, cls, last or max")
