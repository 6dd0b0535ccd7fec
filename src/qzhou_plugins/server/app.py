"""The HTTP app: OpenAI-compatible embeddings, Cohere/Jina-style rerank, models, health, metrics.

Routes only parse, check the key and answer; the work is :class:`~.service.EmbeddingService`'s
(and :class:`~.reranking.RerankService`'s for /v1/rerank). ``create_app`` builds an ASGI app around
one embedding model and optionally a reranker (loaded in the background when the app starts, so that
``/health`` answers 503 meanwhile); ``run_server`` runs it on uvicorn, whose SIGTERM/Ctrl-C
handling lets requests in flight finish before the process exits.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from .extra import require_serve_extra

require_serve_extra()

from fastapi import Depends, FastAPI, Request  # noqa: E402  (after the check that names the extra)
from fastapi.responses import JSONResponse, Response  # noqa: E402

from .. import __version__  # noqa: E402
from ..encoder import Encoder  # noqa: E402
from .errors import RETRY_AFTER_SECONDS, ApiError, install_error_handlers  # noqa: E402
from .limits import BodyLimitMiddleware  # noqa: E402
from .metrics import MetricsMiddleware, ServerMetrics  # noqa: E402
from .reranking import RerankService  # noqa: E402
from .schemas import EmbeddingRequest, EmbeddingResponse, ModelList, RerankRequest, RerankResponse  # noqa: E402
from .service import EmbeddingService  # noqa: E402
from .settings import ServerSettings  # noqa: E402

logger = logging.getLogger("qzhou_plugins.server")

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499
"""What is logged for a request whose client hung up before its answer (nginx's convention)."""

GIL_SWITCH_SECONDS = 0.0005
"""The server process's GIL switch interval (Python's default is 5 ms); see :func:`run_server`."""

SHUTDOWN_GRACE_SECONDS = 60
"""How long a SIGTERM waits for requests in flight before closing their connections."""


def bearer_key_check(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """The dependency that refuses a /v1 request without ``Authorization: Bearer <api_key>``.

    Async, so that FastAPI runs it on the event loop instead of a thread hop per request.
    """

    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send the server's key as 'Authorization: Bearer <key>' "
                "(api_key= in OpenAI clients)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T | Response:
    """``work``'s result, or its cancellation if the client hangs up first.

    A client that timed out (and perhaps retries) must not leave its texts in the queue: cancelled
    here, a request still waiting is dropped by the queue instead of costing a forward pass.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (the body is already read: the next message is the hang-up)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.01)


def create_app(
    settings: ServerSettings,
    *,
    encoder: Encoder | None = None,
    on_load_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """An app serving ``settings.model`` (or ``encoder``, already loaded), and ``settings.rerank_model``
    if given, with its own metrics.

    ``on_load_failure`` is called with the reason if a model cannot be loaded; :func:`run_server`
    uses it to stop the process with an error instead of answering 503 forever.
    """
    metrics = ServerMetrics()
    service = EmbeddingService(settings, metrics, encoder)
    reranking = RerankService(service)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start(on_load_failure)
        reranking.start(on_load_failure)
        try:
            yield
        finally:
            await reranking.stop()
            await service.stop()

    app = FastAPI(
        title="qzhou-plugins embedding server",
        version=__version__,
        description="OpenAI-compatible embeddings and Cohere/Jina-style rerank; see docs/serving.md.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.reranking = reranking
    app.state.metrics = metrics
    install_error_handlers(app, metrics)
    # Inside the metrics (the last added is the outermost), so that refused bodies are counted too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)  # type: ignore[arg-type]
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # type: ignore[arg-type]
    add_routes(app, service, reranking, metrics, bearer_key_check(settings.api_key))
    return app


def add_routes(
    app: FastAPI,
    service: EmbeddingService,
    reranking: RerankService,
    metrics: ServerMetrics,
    check_key: Callable[[Request], Awaitable[None]],
) -> None:
    """The routes; /health and /metrics stay open (load balancers, scrapers), /v1 needs the key."""
    keyed = [Depends(check_key)]
    settings = service.settings

    @app.get("/health", summary="200 once the models are loaded, 503 before (or if one failed)")
    async def health() -> JSONResponse:
        if service.encoder is None or reranking.loading or reranking.load_error:
            error = service.load_error or reranking.load_error
            body = {"status": "failed" if error else "loading", "model": settings.model, "error": error}
            if settings.rerank_model is not None:
                body["rerank_model"] = settings.rerank_model
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        body = {"status": "ok", "model": settings.name}
        if settings.rerank_name is not None:
            body["rerank_model"] = settings.rerank_name
        return JSONResponse(body)

    @app.get("/metrics", summary="Prometheus metrics of this app")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", dependencies=keyed, response_model=ModelList, response_model_exclude_none=True)
    async def models() -> dict[str, Any]:
        listed = service.models()
        card = reranking.card(service.created)
        if card is not None:
            listed["data"].append(card)
        return listed

    @app.post("/v1/embeddings", dependencies=keyed, response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        answer = await unless_client_leaves(request, service.embed(body))
        return answer if isinstance(answer, Response) else Response(answer, media_type="application/json")

    async def rerank(body: RerankRequest, request: Request) -> Any:
        return await unless_client_leaves(request, reranking.rerank(body))

    for path in ("/v1/rerank", "/rerank"):
        app.post(path, dependencies=keyed, response_model=RerankResponse, response_model_exclude_none=True)(
            rerank
        )


def run_server(settings: ServerSettings) -> int:
    """Serve until SIGTERM or Ctrl-C; 0 after a clean stop, 1 if the model failed to load."""
    require_serve_extra()
    import uvicorn

    _log_to_stderr(settings.log_level)
    # The encode thread runs the model's Python code while holding the GIL; at the default 5 ms
    # switch interval the event loop waits that long each time it needs the GIL, and many small
    # requests queue up behind it (measured: 64 clients of single queries, ~85 -> ~113 requests/s).
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    failures: list[str] = []
    server: uvicorn.Server | None = None

    def stop_on_failure(reason: str) -> None:
        failures.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop_on_failure)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = uvicorn.Server(config)
    server.run()
    if failures:
        print(f"error: {failures[0]}", file=sys.stderr)
        return 1
    return 0 if server.started else 1


def _log_to_stderr(level: str) -> None:
    """Show the package's own log lines (model loaded, truncation warnings) beside uvicorn's."""
    package = logging.getLogger("qzhou_plugins")
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        package.addHandler(handler)
    package.setLevel(python_log_level(level))


def python_log_level(level: str) -> str:
    """A ``--log-level`` as Python's logging names it (uvicorn's ``trace`` is below DEBUG)."""
    return "DEBUG" if level == "trace" else level.upper()
