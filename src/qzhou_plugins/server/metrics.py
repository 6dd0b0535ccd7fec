"""Prometheus metrics of one app: requests, errors, latency, batch sizes and queue depth.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (not the process-global one), so
that several apps in one process (tests, a Ray replica next to another) never collide on metric
names. The batch histograms are what shows that coalescing works: ``qzhou_batch_requests`` above 1
means concurrent requests shared a forward pass (``qzhou_rerank_batch_requests`` for the pairs of a
served cross-encoder or LLM reranker, which have a queue of their own).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .extra import require_serve_extra

require_serve_extra()

from prometheus_client import (  # noqa: E402  (after the check that names the missing extra)
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

ROUTES = frozenset({"/v1/embeddings", "/v1/rerank", "/rerank", "/v1/models", "/health", "/metrics"})
"""Paths that get their own label; anything else is ``other`` (a scanner must not grow the labels)."""

_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_label(path: str) -> str:
    return path if path in ROUTES else "other"


class ServerMetrics:
    """The app's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "qzhou_requests", "HTTP requests by route and status code", ["route", "status"], registry=registry
        )
        self.errors = Counter(
            "qzhou_errors", "Error responses by route and error code", ["route", "code"], registry=registry
        )
        self.latency = Histogram(
            "qzhou_request_seconds", "Request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=registry
        )
        self.encoder = QueueMetrics(registry, "qzhou_", "texts", "encode call", "encoder", "instructions")
        self.rerank = QueueMetrics(
            registry, "qzhou_rerank_", "pairs", "score_pairs call", "reranker", "templates"
        )
        self.model_loaded = Gauge("qzhou_model_loaded", "1 once the model is loaded", registry=registry)

    def error(self, path: str, code: str) -> None:
        self.errors.labels(route_label(path), code).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class QueueMetrics:
    """One batching queue's batches and depth: ``{prefix}batch_requests``, ``{prefix}batch_{items}``,
    ``{prefix}batch_tokens``, ``{prefix}queue_{items}`` and ``{prefix}queue_requests``."""

    def __init__(
        self, registry: CollectorRegistry, prefix: str, items: str, call: str, model: str, included: str
    ) -> None:

        def histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(prefix + name, documentation, buckets=buckets, registry=registry)

        self.batch_requests = histogram(
            "batch_requests", f"Requests coalesced into one {call}", _COUNT_BUCKETS
        )
        self.batch_items = histogram(f"batch_{items}", f"{items.capitalize()} in one {call}", _COUNT_BUCKETS)
        self.batch_tokens = histogram(
            "batch_tokens", f"Tokens ({included} included) in one {call}", _TOKEN_BUCKETS
        )
        self.queue_items = Gauge(
            f"{prefix}queue_{items}", f"{items.capitalize()} waiting for the {model}", registry=registry
        )
        self.queue_requests = Gauge(
            f"{prefix}queue_requests", f"Requests waiting for the {model}", registry=registry
        )

    def observe_batch(self, requests: int, items: int, tokens: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_items.observe(items)
        self.batch_tokens.observe(tokens)

    def set_queue_depth(self, items: int, requests: int) -> None:
        self.queue_items.set(items)
        self.queue_requests.set(requests)


class MetricsMiddleware:
    """Counts and times every HTTP request (a plain ASGI middleware: no per-request task or copy)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app fails before it answers
        start = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_label(scope.get("path", ""))
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
