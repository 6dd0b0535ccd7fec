"""What the embedding routes do: the one model, its batching queue, and each request turned into encoder
work (/v1/rerank is :mod:`.reranking`'s, which uses the limits and the queue here).

The HTTP layer (:mod:`.app`) only parses and answers; here a request becomes texts, their side and
instruction (decided by the core's :meth:`~qzhou_plugins.encoder.Encoder.prefixes`, as for every
other edge), its token count (checked against the limits and reported as usage), and rows from the
queue. The model is named by the command line alone: a request can pick a side, never a model or a
file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..backends.matryoshka import cut_rows
from ..encoder import Encoder
from ..families import known_families
from ..instructions import TaskLike
from ..validation import validate_texts
from .errors import ApiError, unavailable
from .limits import check_text_lengths
from .metrics import ServerMetrics
from .queue import EmbeddingQueue, QueueClosedError, QueueFullError
from .schemas import EmbeddingRequest, InputType
from .settings import ServerSettings

logger = logging.getLogger("qzhou_plugins.server")

TOKEN_ARRAYS_MESSAGE = (
    "input holds token ids (integers), but this server takes text only: ids from another tokenizer "
    "mean nothing to this model. LangChain's OpenAIEmbeddings sends tiktoken ids unless you set "
    "check_embedding_ctx_length=False."
)
WARM_UP_TEXT = "warm up"
LARGE_RESPONSE = 100_000
"""Floats in a response from which it is written on a worker thread."""


@contextlib.contextmanager
def core_errors(param: str | None) -> Iterator[None]:
    """The core's and the queue's exceptions as the HTTP errors a client can act on."""
    try:
        yield
    except QueueFullError as error:
        raise unavailable(str(error), code="queue_full") from None
    except QueueClosedError as error:
        raise unavailable(str(error), code="shutting_down") from None
    except (TypeError, ValueError) as error:  # the core's validation: messages written for users
        raise ApiError(400, str(error), code="invalid_input", param=param) from None


def is_token_arrays(items: Any) -> bool:
    """Whether ``items`` is a list of token ids or a list of lists of them (OpenAI's other inputs)."""

    def ids(row: Any) -> bool:
        return isinstance(row, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in row)

    return isinstance(items, list) and bool(items) and (ids(items) or all(ids(row) for row in items))


def embedding_body(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> bytes:
    """OpenAI's embeddings response; rows as floats or base64 of little-endian float32 (what the SDK
    decodes with numpy)."""
    if encoding_format == "base64":
        rows: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors.astype("<f4")]
    else:
        rows = vectors.tolist()
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class EmbeddingService:
    """The served encoder and its queue, shared by every request of one app."""

    def __init__(self, settings: ServerSettings, metrics: ServerMetrics, encoder: Encoder | None = None):
        self.settings = settings
        self.metrics = metrics
        self.encoder: Encoder | None = None
        self.queue: EmbeddingQueue | None = None
        self.load_error: str | None = None
        self.created = int(time.time())
        self._given = encoder
        self._loading: asyncio.Task[None] | None = None

    # -- life ---------------------------------------------------------------------------------------

    def start(self, on_failure: Callable[[str], None] | None = None) -> None:
        """Load the model in the background: the server answers /health (503) meanwhile."""
        self._loading = asyncio.get_running_loop().create_task(self._load(on_failure))

    async def _load(self, on_failure: Callable[[str], None] | None) -> None:
        try:
            encoder = self._given or await asyncio.to_thread(Encoder.shared, self.settings.encoder_config())
            queue = EmbeddingQueue(
                lambda texts, prefixes: encoder.encode_with_prefix(texts, prefixes, show_progress=False),
                batch_tokens=encoder.config.batch_tokens,
                max_waiting=self.settings.max_queue,
                wait_seconds=self.settings.batch_wait_ms / 1000,
                coalesce=self.settings.batching,
                metrics=self.metrics.encoder,
            )
            # The first forward pass allocates: done here, it is not the first client's latency.
            await queue.run_in_worker_thread(lambda: encoder.encode_with_prefix([WARM_UP_TEXT], ""))
        except Exception as error:
            self.load_error = f"could not load {self.settings.model!r}: {type(error).__name__}: {error}"
            logger.error("%s", self.load_error)
            if on_failure is not None:
                on_failure(self.load_error)
            return
        queue.start()
        self.encoder, self.queue = encoder, queue
        self.metrics.model_loaded.set(1)
        logger.info(
            "serving %s as %r (documents) and %r (queries) on %s: dimension %d, max_length %d, batch "
            "budget %d tokens, batching %s",
            self.settings.model,
            self.settings.name,
            self.settings.query_name,
            encoder.facts.runtime,
            encoder.dimension,
            encoder.max_length,
            encoder.config.batch_tokens,
            "on" if self.settings.batching else "off",
        )

    async def loaded(self) -> bool:
        """Whether the model loaded, once it has (or has failed to)."""
        if self._loading is not None:
            await asyncio.shield(self._loading)
        return self.encoder is not None

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        if self.queue is not None:
            await self.queue.close()

    def ready(self) -> tuple[Encoder, EmbeddingQueue]:
        """The encoder and queue, or a 503 while the model loads (or after it failed to)."""
        if self.encoder is None or self.queue is None:
            message = self.load_error or f"the model {self.settings.model!r} is still loading"
            raise unavailable(message, code="model_not_ready")
        return self.encoder, self.queue

    # -- shared steps -------------------------------------------------------------------------------

    def side(self, model: str | None, input_type: InputType | None) -> InputType:
        """The side a request is on, from its ``model`` alias and ``input_type``; 404 for another model."""
        aliases: dict[str, InputType] = {self.settings.name: "document", self.settings.query_name: "query"}
        if model is not None and model not in aliases:
            raise ApiError(
                404,
                f"the model {model!r} is not served here: send model={self.settings.name!r} (documents) or "
                f"{self.settings.query_name!r} (queries)",
                code="model_not_found",
                param="model",
            )
        by_alias = aliases[model] if model is not None else None
        if by_alias == "query" and input_type == "document":
            raise ApiError(
                400,
                f"model {model!r} embeds queries, but input_type is 'document': send one or the other",
                code="invalid_input",
                param="input_type",
            )
        return input_type or by_alias or "document"

    def prefixes(self, task: TaskLike) -> tuple[str, str]:
        encoder, _ = self.ready()
        with core_errors("task"):
            return encoder.prefixes(task)

    def count_tokens(self, texts: Sequence[str], prefixes: Sequence[str]) -> int:
        """Tokens the model sees (instructions included, each text capped at max_length);
        413 over the limit."""
        encoder, _ = self.ready()
        counted = encoder.backend.count_tokens([p + t for p, t in zip(prefixes, texts, strict=True)])
        total = 0 if counted is None else sum(min(n, encoder.max_length) for n in counted)
        return self.check_request_tokens(total, "instructions included")

    def check_request_tokens(self, total: int, included: str) -> int:
        """``total``, or 413 when a request holds more tokens than the server takes."""
        if total > self.settings.max_request_tokens:
            raise ApiError(
                413,
                f"the request holds {total} tokens ({included}) and this server takes at most "
                f"{self.settings.max_request_tokens} per request (--max-request-tokens): split it",
                code="too_many_tokens",
            )
        return total

    def check_lengths(
        self, texts: Any, what: str, *, one: bool = False, max_length: int | None = None
    ) -> None:
        """413 for a text far longer than the model reads (the encoder's ``max_length`` unless given),
        before anything tokenises it."""
        if isinstance(texts, list):
            if max_length is None:
                encoder, _ = self.ready()
                max_length = encoder.max_length
            check_text_lengths(texts, what, max_length, one=one)

    def check_items(self, count: int, what: str) -> None:
        if count > self.settings.max_inputs:
            raise ApiError(
                413,
                f"{what} holds {count} items and this server takes at most {self.settings.max_inputs} per "
                "request (--max-inputs): split it",
                code="too_many_inputs",
                param=what,
            )

    # -- embeddings ---------------------------------------------------------------------------------

    def input_texts(self, value: Any) -> list[str]:
        """The request's ``input`` as validated texts, refused with the position of a bad item."""
        if is_token_arrays(value):
            raise ApiError(400, TOKEN_ARRAYS_MESSAGE, code="token_arrays_unsupported", param="input")
        items = [value] if isinstance(value, str) else value
        self.check_lengths(items, "input")
        with core_errors("input"):
            texts = validate_texts(items, what="input")
        if not texts:
            raise ApiError(400, "input must not be an empty list", code="invalid_input", param="input")
        self.check_items(len(texts), "input")
        return texts

    async def embed(self, request: EmbeddingRequest) -> bytes:
        """The JSON body of the answer to ``request`` (see :func:`embedding_body`)."""
        encoder, queue = self.ready()
        side = self.side(request.model, request.input_type)
        dimensions = self.dimensions(request.dimensions)
        with queue.arriving():
            texts = self.input_texts(request.input)
            query_prefix, document_prefix = self.prefixes(request.task)
            prefixes = [query_prefix if side == "query" else document_prefix] * len(texts)
            tokens = await asyncio.to_thread(self.count_tokens, texts, prefixes)
            with core_errors("input"):
                rows = queue.enqueue(texts, prefixes, tokens)
        with core_errors("input"):
            vectors = await rows
        if dimensions is not None:
            vectors = cut_rows(vectors, dimensions, encoder.facts.normalized)
        model = request.model or self.settings.name
        render = functools.partial(embedding_body, vectors, request.encoding_format, model, tokens)
        # Writing a million floats as JSON takes a while: not on the event loop.
        return render() if vectors.size < LARGE_RESPONSE else await asyncio.to_thread(render)

    def dimensions(self, asked: int | None) -> int | None:
        """The Matryoshka size a request asks for (None: the served width), or a 400 naming the problem:
        checked by the model family's record, as ``Encoder(dimensions=...)`` is."""
        encoder, _ = self.ready()
        if asked is None or asked == encoder.dimension:
            return None
        family = known_families().get(encoder.family)
        try:
            if family is None:
                raise ValueError(f"the family of this model is not known ({encoder.family!r})")
            family.check_dimensions(asked, encoder.dimension, self.settings.name)
        except ValueError as error:
            not_matryoshka = family is None or family.matryoshka_min is None
            raise ApiError(
                400,
                ("this model is not a Matryoshka model: " if not_matryoshka else "") + str(error),
                code="dimensions_unsupported" if not_matryoshka else "invalid_dimensions",
                param="dimensions",
            ) from None
        return asked

    # -- models -------------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        encoder, _ = self.ready()
        family = known_families().get(encoder.family)
        matryoshka_min = family.matryoshka_min if family is not None else None
        cards = [
            {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "qzhou-plugins",
                "kind": "embedding",
                "score_scale": "cosine",
                "input_type": side,
                "dimension": encoder.dimension,
                "max_length": encoder.max_length,
                "position_limit": encoder.facts.position_limit,
                "family": encoder.family,
                "pooling": encoder.pooling,
                # What a remote client rebuilds the same prompts and Matryoshka checks from.
                "saved_prompts": dict(encoder.facts.prompt_style.saved_prompts),
                "matryoshka_min": matryoshka_min,
                "runtime": encoder.facts.runtime,
            }
            for name, side in ((self.settings.name, "document"), (self.settings.query_name, "query"))
        ]
        return {"object": "list", "data": cards}
