"""One progress bar for a bulk job, in rows with tokens per second, whichever engine runs it.

Rows say how far the job is; tokens per second say how fast the model works, which is what to
compare with a GPU's expected throughput (rows per second depends on the corpus's text lengths).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..encoder import Encoder


def token_counts(encoder: Encoder, prefix: str, texts: Sequence[str]) -> np.ndarray:
    """Tokens the model sees for each text (prefix included, cut at ``max_length``); 0 if unknown."""
    counts = encoder.backend.count_tokens([prefix + text for text in texts])
    if counts is None:  # a served model does not tell
        return np.zeros(len(texts), dtype=np.int64)
    return np.minimum(np.asarray(counts, dtype=np.int64), encoder.max_length)


class Progress:
    """Rows done out of the rows to embed, with the token rate since the start."""

    def __init__(self, total: int, *, show: bool) -> None:
        self.total = total
        self.rows = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self.first: tuple[float, int] | None = None
        """When the first rows came back and their tokens: what came before is start-up."""
        self.last = self.started
        self._bar = tqdm(total=total, unit="row", desc="Embedding", disable=not show, smoothing=0.1)

    def update(self, rows: int, tokens: int) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = (self.last, tokens)
        self.rows += rows
        self.tokens += tokens
        self._bar.update(rows)
        rows_per_second = self._bar.format_dict.get("rate")  # smoothed: model loading fades out
        if self.tokens and rows_per_second:
            rate = rows_per_second * self.tokens / self.rows
            self._bar.set_postfix_str(f"{rate:,.0f} tokens/s")

    @property
    def startup_seconds(self) -> float:
        """Until the first rows came back: loading the model (and, on Ray, starting the actors)."""
        return 0.0 if self.first is None else self.first[0] - self.started

    @property
    def steady_tokens_per_second(self) -> float:
        """Tokens per second after the first rows: the engine's pace once started."""
        if self.first is None or self.last <= self.first[0]:
            return 0.0
        return (self.tokens - self.first[1]) / (self.last - self.first[0])

    def close(self) -> None:
        self._bar.close()


class FirstOfEachWarning(logging.Filter):
    """Lets the first record of each message through: a million-row job would otherwise repeat the
    encoder's truncation warning once per chunk of rows, burying everything else in the log."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[object] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.seen:
            return False
        self.seen.add(record.msg)
        return True


@contextlib.contextmanager
def first_warnings_only() -> Iterator[None]:
    """:class:`FirstOfEachWarning` on the package's logger for the duration of a job."""
    logger = logging.getLogger("qzhou_plugins")
    once = FirstOfEachWarning()
    logger.addFilter(once)
    try:
        yield
    finally:
        logger.removeFilter(once)
