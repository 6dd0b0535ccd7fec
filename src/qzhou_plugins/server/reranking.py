"""What ``/v1/rerank`` does: which model a request means, its checks, and its pairs batched with others.

Two scorers can answer: the embedder (the cosine of the instructed query and each candidate, through
the embeddings queue, so reranks share forward passes with embedding requests) and, with
``--rerank-model``, a cross-encoder or LLM reranker loaded beside it, whose (query, document) pairs
wait in a queue of their own: the pairs of concurrent requests are scored in one
``Reranker.score_pairs`` call (the core then sorts them by length and fills forward passes to the
token budget), as the embeddings endpoint coalesces texts. ``model`` routes: the reranker's name,
the embedder's (either alias), or none (the served reranker if there is one, else the embedder);
any other name is a 404. Scoring and sorting stay the core's (:func:`score_candidates`,
:func:`rank`): the embedder reranks as the core's embedding :class:`Reranker` of an ``Encoder``
whose backend is the embeddings queue (:class:`QueuedBackend`), the served reranker through
:class:`QueuedReranker`; both only carry the one model call through a queue. A request whose client
hangs up is dropped from its queue before it is scored (:class:`~.queue.RequestJobs`), as an
embedding request is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np

from ..backends.base import BackendFacts
from ..encoder import Encoder
from ..instructions import TaskLike, TaskType, check_instruction, resolve_task
from ..rerank import rank, score_candidates
from ..rerank.formats import lowest_score
from ..rerank.reranker import Reranker, llm_instruction
from ..validation import as_list, check_count, positions, validate_text, validate_texts
from .errors import ApiError, unavailable
from .queue import BatchingQueue, EmbeddingQueue, RequestJobs
from .rerank_tokens import PairCounter
from .schemas import RerankRequest
from .service import EmbeddingService, core_errors

logger = logging.getLogger("qzhou_plugins.server")

WARM_UP_TEXT = "warm up"


class RerankService:
    """The served reranker (if any), its pair queue, and every rerank request of one app."""

    def __init__(self, embedding: EmbeddingService) -> None:
        self.embedding = embedding
        self.settings = embedding.settings
        self.reranker: Reranker | None = None
        self.queue: BatchingQueue | None = None
        self.counter: PairCounter | None = None
        self.load_error: str | None = None
        self._loading: asyncio.Task[None] | None = None
        # score_candidates runs on these threads and waits there for a queue (never on the loop's).
        self._threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="qzhou-rerank")

    # -- life ---------------------------------------------------------------------------------------

    def start(self, on_failure: Callable[[str], None] | None = None) -> None:
        """Load the served reranker in the background, if there is one (/health says 503 meanwhile)."""
        if self.settings.rerank_model is not None:
            self._loading = asyncio.get_running_loop().create_task(self._load(on_failure))

    async def _load(self, on_failure: Callable[[str], None] | None) -> None:
        config = self.settings.reranker_config()
        # After the embedder, not beside it: two threads importing transformers at once can fail.
        if not await self.embedding.loaded():
            return
        try:
            reranker = await asyncio.to_thread(Reranker.shared, config)
            queue = BatchingQueue(
                pair_scorer(reranker),
                batch_tokens=reranker.config.batch_tokens,
                max_waiting=self.settings.max_queue,
                wait_seconds=self.settings.batch_wait_ms / 1000,
                coalesce=self.settings.batching,
                metrics=self.embedding.metrics.rerank,
                what="pairs",
            )
            counter = PairCounter(reranker)
            # The first forward pass allocates: done here, it is not the first client's latency.
            await queue.run_in_worker_thread(lambda: reranker.score_pairs([WARM_UP_TEXT], [WARM_UP_TEXT]))
        except Exception as error:
            self.load_error = (
                f"could not load the reranker {self.settings.rerank_model!r}: {type(error).__name__}: {error}"
            )
            logger.error("%s", self.load_error)
            if on_failure is not None:
                on_failure(self.load_error)
            return
        queue.start()
        self.reranker, self.queue, self.counter = reranker, queue, counter
        facts = reranker.facts
        logger.info(
            "serving the reranker %s as %r on %s: %s, scores on the %s scale, max_length %d",
            self.settings.rerank_model,
            self.settings.rerank_name,
            facts.runtime,
            facts.kind,
            facts.score_scale,
            facts.max_length,
        )

    @property
    def loading(self) -> bool:
        """Whether a served reranker is still on its way (not loaded, not failed)."""
        return self.settings.rerank_model is not None and self.reranker is None and self.load_error is None

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.queue is not None:
            await self.queue.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> tuple[Reranker, BatchingQueue]:
        """The served reranker and its queue, or a 503 while it loads (or after it failed to)."""
        if self.reranker is None or self.queue is None:
            message = self.load_error or f"the reranker {self.settings.rerank_model!r} is still loading"
            raise unavailable(message, code="model_not_ready")
        return self.reranker, self.queue

    def card(self, created: int) -> dict[str, Any] | None:
        """The served reranker's entry of /v1/models (None when none is served)."""
        if self.settings.rerank_name is None:
            return None
        reranker, _ = self.ready()
        facts = reranker.facts
        return {
            "id": self.settings.rerank_name,
            "object": "model",
            "created": created,
            "owned_by": "qzhou-plugins",
            "kind": facts.kind,
            "score_scale": facts.score_scale,
            "max_length": facts.max_length,
            "position_limit": facts.position_limit,
            "runtime": facts.runtime,
        }

    # -- requests -----------------------------------------------------------------------------------

    def served_reranker(self, model: str | None) -> bool:
        """Whether ``model`` means the served reranker (else the embedder); 404 for another model."""
        rerank_name = self.settings.rerank_name
        if model is None:
            return rerank_name is not None
        if model == rerank_name:
            return True
        if model in (self.settings.name, self.settings.query_name):
            return False
        served = [repr(name) for name in (rerank_name, self.settings.name) if name is not None]
        what = "the reranker or the embedder" if rerank_name is not None else "the embedder"
        raise ApiError(
            404,
            f"the model {model!r} is not served here: send model={' or '.join(served)} ({what}), or leave "
            "model out",
            code="model_not_found",
            param="model",
        )

    async def rerank(self, request: RerankRequest) -> dict[str, Any]:
        """The Cohere/Jina-shaped answer to ``request``: results best first, usage in tokens."""
        served = self.served_reranker(request.model)
        if served:
            reranker, _ = self.ready()
            max_length = reranker.facts.max_length
        else:
            self.embedding.ready()
            max_length = None
        self.embedding.check_lengths([request.query], "query", one=True, max_length=max_length)
        with core_errors("query"):
            query = validate_text(request.query, what="query")
        with core_errors("top_n"):
            check_count(request.top_n, what="top_n")
        with core_errors("instruction"):
            instruction = check_instruction(request.instruction)
        documents = self.document_texts(request.documents, max_length)
        task: TaskLike = request.task if request.task is not None else TaskType.RERANKING
        with core_errors("task"):
            if served:
                self.check_reranker_inputs(reranker, task, instruction)
            else:
                self.embedding.prefixes(task)  # an unknown task is refused before any work
        scores, tokens = await self._scores(served, query, documents, task, instruction)
        results = []
        for candidate in rank(scores, top_n=request.top_n):
            result: dict[str, Any] = {"index": candidate.index, "relevance_score": candidate.score}
            if request.return_documents:
                result["document"] = {"text": documents[candidate.index]}
            results.append(result)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        name = self.settings.rerank_name if served else self.settings.name
        return {"model": request.model or name, "results": results, "usage": usage}

    async def _scores(
        self, served: bool, query: str, documents: list[str], task: TaskLike, instruction: str | None
    ) -> tuple[np.ndarray, int]:
        """The scores of ``documents`` (the core's :func:`score_candidates`, on a rerank thread whose
        one model call goes through a queue) and the tokens they took; dropped from the queue, unscored,
        if the request is cancelled (its client hung up) while they wait."""
        loop = asyncio.get_running_loop()
        jobs = RequestJobs(loop)
        with contextlib.ExitStack() as arrival:
            scorer: Any
            if served:  # the pair queue waits for company only while a request is on its way
                reranker, queue = self.ready()
                arrival.enter_context(queue.arriving())
                counted = scorer = QueuedReranker(self, reranker, queue, jobs, arrival.close)
            else:  # the embedder's own reranker, on an encoder whose backend is the embeddings queue
                counted = QueuedBackend(self.embedding, jobs)
                encoder, _ = self.embedding.ready()
                scorer = Reranker.of_encoder(Encoder(encoder.config, backend=counted))
            # Texts are checked by now: what the model refuses is the pair (a query that leaves no room).
            with core_errors(None):
                try:
                    scores = await loop.run_in_executor(
                        self._threads,
                        lambda: score_candidates(
                            scorer, query, documents, task=task, instruction=instruction
                        ),
                    )
                except asyncio.CancelledError:
                    jobs.cancel()
                    raise
        return scores, counted.tokens

    def check_reranker_inputs(self, reranker: Reranker, task: TaskLike, instruction: str | None) -> None:
        """Refuse before any work what the served reranker would refuse: an unknown task, an
        instruction for a cross-encoder."""
        resolve_task(task)
        if instruction and reranker.kind == "cross-encoder":
            raise ApiError(
                400,
                f"the reranker {self.settings.rerank_name!r} is a cross-encoder: it takes no instruction (it "
                "was trained on bare pairs); leave instruction out",
                code="invalid_input",
                param="instruction",
            )

    def document_texts(self, value: Any, max_length: int | None) -> list[str]:
        """``documents`` (strings or ``{"text": ...}`` objects) as validated texts."""
        with core_errors("documents"):
            items = as_list(value, what="documents", kind='strings or {"text": ...} objects')
        missing = [i for i, item in enumerate(items) if isinstance(item, dict) and "text" not in item]
        if missing:
            raise ApiError(
                400,
                f"documents at position(s) {positions(missing)} are objects without a 'text' field",
                code="invalid_input",
                param="documents",
            )
        texts = [item["text"] if isinstance(item, dict) else item for item in items]
        self.embedding.check_lengths(texts, "documents", max_length=max_length)
        with core_errors("documents"):
            checked = validate_texts(texts, what="documents")
        self.embedding.check_items(len(checked), "documents")
        return checked


def pair_scorer(reranker: Reranker) -> Callable[[tuple[list[Any], ...], Hashable], np.ndarray]:
    """The pair queue's one call: a batch of pairs that share a task and an instruction."""

    def score(columns: tuple[list[Any], ...], key: Hashable) -> np.ndarray:
        task, instruction = cast(tuple[TaskLike, str | None], key)
        queries, documents = columns
        return reranker.score_pairs(
            queries, documents, task=task, instruction=instruction, show_progress=False
        )

    return score


class QueuedReranker:
    """What :func:`~qzhou_plugins.rerank.score_candidates` uses of a Reranker, scoring through the pair
    queue from the rerank thread; its tokens counted for the limits and usage."""

    def __init__(
        self,
        service: RerankService,
        reranker: Reranker,
        queue: BatchingQueue,
        jobs: RequestJobs,
        enqueued: Callable[[], None],
    ) -> None:
        self._service = service
        self._reranker = reranker
        self._queue = queue
        self._jobs = jobs
        self._enqueued = enqueued
        self.lowest_score = lowest_score(reranker.score_scale)
        self.tokens = 0

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        task: TaskLike,
        instruction: str | None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        effective = instruction
        if effective is None and self._reranker.kind == "llm":
            effective = llm_instruction(task)
        assert self._service.counter is not None
        counted = self._service.counter(queries[0], documents, effective) if queries else 0
        self.tokens = self._service.embedding.check_request_tokens(counted, "queries, templates included")
        return self._jobs.rows(lambda: self._enqueue(queries, documents, (task, instruction)))

    def _enqueue(
        self, queries: Sequence[str], documents: Sequence[str], key: Hashable
    ) -> asyncio.Future[np.ndarray]:
        try:
            return self._queue.enqueue_columns((queries, documents), self.tokens, key)
        finally:
            self._enqueued()  # on the loop, right after the enqueue: no longer "on its way"


class QueuedBackend:
    """The served encoder's backend as the rerank thread sees it: each ``embed`` call goes through the
    embeddings queue, so that reranks share forward passes with concurrent embedding requests, and
    its tokens are counted for the limits and usage.

    An :class:`~qzhou_plugins.Encoder` around it is the one a :class:`Reranker` takes (its embedding
    reranker), so the cosine, the instructions and the checks stay the core's, written once.
    """

    def __init__(self, service: EmbeddingService, jobs: RequestJobs) -> None:
        encoder, queue = service.ready()
        self._service = service
        self._backend = encoder.backend
        self._queue: EmbeddingQueue = queue
        self._jobs = jobs
        self.tokens = 0

    @property
    def facts(self) -> BackendFacts:
        return self._backend.facts

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        prefixed = list(texts)  # the encoder has put each text's prefix before it
        prefixes = [""] * len(prefixed)
        tokens = self._service.count_tokens(prefixed, prefixes)
        self.tokens += tokens
        return self._jobs.rows(lambda: self._queue.enqueue(prefixed, prefixes, tokens))

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return self._backend.count_tokens(texts)
