"""Cross-request batching: many small concurrent requests become a few large model calls.

Without it, 64 clients each sending one query make 64 forward passes of one text, and the model
spends its time on per-call overhead instead of arithmetic. Here one worker takes the first waiting
request and lets it wait a bounded moment for others: ``wait_seconds`` from its arrival (so a
loaded server never waits again), and only while other requests are on their way (so a lone one
never waits). It takes the following requests in arrival order while they fit in the token budget,
and makes ONE ``encode_with_prefix`` call for all of their texts. Inside it the core's planner sorts
the texts by length and fills forward passes to ``batch_tokens``; the rows come back in the order
given and are cut back into each request's share.

One call at a time runs, on one dedicated thread: one forward pass at a time per device, and the
event loop never waits for the model. A failed call is retried request by request, so that one
request's error (an instruction too long for ``max_length``, say) is never another's.

The gathering is the same for every model call, so it is written once (:class:`BatchingQueue`): a
job is parallel *columns* of items (texts and their prefixes for the encoder, queries and documents
for a reranker) and a *key* that only jobs sharing it may share a call under (a reranker's task and
instruction: one ``score_pairs`` call takes one). :class:`EmbeddingQueue` is its encoder front.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

EncodeCall = Callable[[list[str], list[str]], np.ndarray]
"""``(texts, per-text prefixes) -> one float32 row per text``: the encoder's one entry point."""
BatchCall = Callable[[tuple[list[Any], ...], Hashable], np.ndarray]
"""``(columns, key) -> one row per item``: what a :class:`BatchingQueue` calls for a batch."""


class BatchMetrics(Protocol):
    """Where a queue reports its batches and its depth (a :class:`~.metrics.QueueMetrics`)."""

    def observe_batch(self, requests: int, items: int, tokens: int) -> None: ...

    def set_queue_depth(self, items: int, requests: int) -> None: ...


class QueueFullError(RuntimeError):
    """More texts are waiting than the server lets wait: the client should come back later."""


class QueueClosedError(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass(eq=False)
class Job:
    """One request's items (parallel columns), waiting for their rows."""

    columns: tuple[list[Any], ...]
    tokens: int
    arrived: float
    future: asyncio.Future[np.ndarray] = field(repr=False)
    key: Hashable = None

    @property
    def size(self) -> int:
        return len(self.columns[0])


class BatchingQueue:
    """The batching queue in front of one model call (see the module docstring).

    ``coalesce=False`` makes one call per request, in arrival order, through the same worker: the
    baseline that shows what coalescing is worth, with everything else equal. ``what`` names the
    items in messages (texts, pairs).
    """

    def __init__(
        self,
        call: BatchCall,
        *,
        batch_tokens: int,
        max_waiting: int,
        wait_seconds: float = 0.002,
        coalesce: bool = True,
        metrics: BatchMetrics | None = None,
        what: str = "texts",
    ) -> None:
        self._call = call
        self.what = what
        self.batch_tokens = batch_tokens
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self.coalesce = coalesce
        self._metrics = metrics
        self._jobs: deque[Job] = deque()
        self._waiting = 0
        self._coming = 0
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"qzhou-{what}")
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """Items waiting for the model."""
        return self._waiting

    def start(self) -> None:
        """Start the worker on the running event loop."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="qzhou-batching")

    async def close(self) -> None:
        """Stop the worker; requests still waiting get :class:`QueueClosedError`."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(QueueClosedError("the server is shutting down"))
        self._set_depth(0)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run_in_worker_thread(self, call: Callable[[], object]) -> object:
        """Run ``call`` on the model's thread, between batches (used for the warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request on its way (validated, counted) to :meth:`enqueue`.

        The worker waits for company only while some request is on its way: a lone request on a
        quiet server goes straight to the model, with no added latency.
        """
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            self._arrived.set()

    def enqueue_columns(
        self, columns: Sequence[Sequence[Any]], tokens: int, key: Hashable = None
    ) -> asyncio.Future[np.ndarray]:
        """Queue one request's items (parallel ``columns``); the future gets their rows.

        Refused with :class:`QueueFullError` when the items would take the waiting count over
        ``max_waiting``; a request is always taken when nothing waits, so no request is impossible.
        """
        if self._closed:
            raise QueueClosedError("the server is shutting down")
        size = len(columns[0])
        if self._waiting and self._waiting + size > self.max_waiting:
            raise QueueFullError(
                f"{self._waiting} {self.what} are waiting for the model and this server lets at most "
                f"{self.max_waiting} wait (--max-queue); retry shortly"
            )
        loop = asyncio.get_running_loop()
        job = Job(tuple(list(column) for column in columns), tokens, loop.time(), loop.create_future(), key)
        self._jobs.append(job)
        self._set_depth(self._waiting + size)
        self._arrived.set()
        return job.future

    # -- the worker ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            if batch:
                await self._encode_batch(batch)

    async def _gather(self) -> list[Job]:
        """The next batch: the first waiting job, then those that follow while they fit the budget
        (and share its key)."""
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self._jobs.popleft()]
        tokens = batch[0].tokens
        if self.coalesce:
            loop = asyncio.get_running_loop()
            deadline = batch[0].arrived + self.wait_seconds
            while tokens < self.batch_tokens:
                if not self._jobs:
                    if not self._coming or not await self._wait_for_arrival(deadline - loop.time()):
                        break
                    continue
                following = self._jobs[0]
                if tokens + following.tokens > self.batch_tokens or following.key != batch[0].key:
                    break
                batch.append(self._jobs.popleft())
                tokens += batch[-1].tokens
        self._set_depth(self._waiting - sum(job.size for job in batch))
        # A request whose client went away while it waited is dropped here, not encoded.
        return [job for job in batch if not job.future.done()]

    async def _wait_for_arrival(self, seconds: float) -> bool:
        """Whether a job arrived within ``seconds``."""
        if seconds <= 0:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def _encode_batch(self, batch: list[Job]) -> None:
        """One model call for the whole batch; its rows routed back to each job in order."""
        columns = tuple(
            [item for job in batch for item in job.columns[c]] for c in range(len(batch[0].columns))
        )
        if self._metrics is not None:
            self._metrics.observe_batch(len(batch), len(columns[0]), sum(job.tokens for job in batch))
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self._call, columns, batch[0].key)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0], error=error)
            else:  # isolate the request that failed: each of the others still gets its rows
                for job in batch:
                    await self._encode_batch([job])
            return
        start = 0
        for job in batch:
            _settle(job, rows=vectors[start : start + job.size])
            start += job.size

    def _set_depth(self, items: int) -> None:
        self._waiting = items
        if self._metrics is not None:
            self._metrics.set_queue_depth(items, len(self._jobs))


class EmbeddingQueue(BatchingQueue):
    """The batching queue in front of one encoder: texts, each with its prefix."""

    def __init__(self, encode: EncodeCall, **options: Any) -> None:
        super().__init__(lambda columns, _key: encode(*columns), **options)

    @property
    def waiting_texts(self) -> int:
        return self.waiting

    def enqueue(
        self, texts: Sequence[str], prefixes: Sequence[str], tokens: int
    ) -> asyncio.Future[np.ndarray]:
        """Queue ``texts`` (each with its prefix); the future gets their rows."""
        return self.enqueue_columns((texts, prefixes), tokens)


class RequestJobs:
    """The jobs one request queues from a worker thread, where the core's scoring runs (a rerank):
    cancelled together when the request is, so that a request whose client hung up is dropped
    before it is scored, and queues nothing more.

    A request that awaits its job on the event loop (an embedding request) has this for free:
    cancelling the request cancels the future it awaits. Work on a thread waits in a coroutine of
    its own, which must be told.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._futures: list[asyncio.Future[np.ndarray]] = []
        self._cancelled = False

    def rows(self, enqueue: Callable[[], asyncio.Future[np.ndarray]]) -> np.ndarray:
        """From the worker thread: the rows of the job that ``enqueue`` (run on the loop) queues."""
        return asyncio.run_coroutine_threadsafe(self._queued(enqueue), self._loop).result()

    async def _queued(self, enqueue: Callable[[], asyncio.Future[np.ndarray]]) -> np.ndarray:
        if self._cancelled:
            raise asyncio.CancelledError("the request was cancelled before its job was queued")
        future = enqueue()
        self._futures.append(future)
        return await future

    def cancel(self) -> None:
        """On the loop: every job of the request still waiting is dropped, none is queued after."""
        self._cancelled = True
        for future in self._futures:
            future.cancel()


def _settle(job: Job, *, rows: np.ndarray | None = None, error: BaseException | None = None) -> None:
    """Hand a job its rows or its error, unless its request is already gone."""
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(rows)  # type: ignore[arg-type]
