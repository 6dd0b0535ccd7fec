"""The inspector's HTTP app: the page's static files and its JSON endpoints, on FastAPI.

Every endpoint reads through :class:`~.catalog.Catalog` (collections opened once, as ``query`` opens
them) and the collection's own query (:mod:`.search`); errors are answered as
``{"error": {"message", "code"}}`` with the command line's message, which the page shows as it is.

Two guards are on by default: a request whose ``Host`` header is not one of the page's own names is
refused (a web page elsewhere cannot reach this one through a DNS name it rebinds to 127.0.0.1), and
with an API key every ``/api`` request must carry ``Authorization: Bearer KEY`` (the page reads the key
from the address's ``#key=`` fragment, which browsers never send to a server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

from . import require_inspect_extra

require_inspect_extra()

from fastapi import Body, Depends, FastAPI, Request  # noqa: E402  (after the check naming the extra)
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import FileResponse, JSONResponse, Response  # noqa: E402

from ..cli.errors import UsageError, one_line  # noqa: E402
from ..server.app import bearer_key_check  # noqa: E402
from ..server.errors import ApiError  # noqa: E402
from . import chunks, evaluations, search  # noqa: E402
from .catalog import Catalog  # noqa: E402

STATIC = Path(__file__).with_name("static")
PAGES = {"/": "index.html", "/static/app.js": "app.js", "/static/style.css": "style.css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error_answer(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": code}}, status_code=status)


def create_app(
    catalog: Catalog,
    *,
    api_key: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    evaluation_files: list[dict[str, Any]] | None = None,
) -> FastAPI:
    """The app over ``catalog``; ``allowed_hosts`` None lets any ``Host`` through (a wildcard bind)."""
    app = FastAPI(title="qzhou-plugins inspect", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(_host_guard(allowed_hosts))
    _install_errors(app)
    for route, name in PAGES.items():
        app.add_api_route(route, _static(name), methods=["GET"], include_in_schema=False)
    key = [Depends(bearer_key_check(api_key))]
    _add_collection_routes(app, catalog, key)
    _add_evaluation_routes(app, evaluation_files or [], key)
    return app


def _add_collection_routes(app: FastAPI, catalog: Catalog, key: list[Any]) -> None:
    @app.get("/favicon.ico", include_in_schema=False)
    def no_icon() -> Response:
        return Response(status_code=204)

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/collections", dependencies=key)
    def collections() -> dict[str, Any]:
        return {"where": _where(catalog), "collections": catalog.summaries()}

    @app.get("/api/collections/{name}", dependencies=key)
    def collection(name: str) -> dict[str, Any]:
        return catalog.describe(name)

    @app.post("/api/search", dependencies=key)
    def search_route(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI's way)
        opened, text, options = _request(catalog, body)
        return search.search(opened, text, options)

    @app.post("/api/compare", dependencies=key)
    def compare_route(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        opened, text, options = _request(catalog, body)
        return search.compare(opened, text, options)

    @app.get("/api/document", dependencies=key)
    def document(collection: str, id: str) -> dict[str, Any]:
        return chunks.document_view(catalog.open(collection), id)


def _add_evaluation_routes(app: FastAPI, files: list[dict[str, Any]], key: list[Any]) -> None:
    @app.get("/api/evaluations", dependencies=key)
    def listed() -> dict[str, Any]:
        return {"files": files}

    @app.post("/api/plots", dependencies=key)
    def plotted(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        return evaluations.plot(body.get("files"), body.get("first"), body.get("second"))


def _request(catalog: Catalog, body: dict[str, Any]) -> tuple[Any, str, Any]:
    """The collection, query text and options of a search request, each checked before any search."""
    name = body.get("collection")
    if not isinstance(name, str) or not name:
        raise UsageError("choose a collection (the request has no 'collection')")
    text = search.query_text(body)  # checked in the order `query` checks its arguments
    options = search.query_options(body)
    opened = catalog.open(name)
    search.check_length(text, opened)
    return opened, text, options


def _where(catalog: Catalog) -> str:
    from ..cli.where import describe_where

    return describe_where(catalog.where)


def _static(name: str) -> Callable[[], Awaitable[Response]]:
    async def page() -> Response:
        return FileResponse(STATIC / name, headers=SECURITY_HEADERS)

    return page


def _host_guard(allowed: Collection[str] | None) -> Callable[..., Awaitable[Response]]:
    """The middleware that refuses a ``Host`` that is not one of the page's names (DNS rebinding)."""

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if allowed is not None and name.lower() not in allowed:
            return error_answer(
                421,
                f"this page answers to {', '.join(sorted(allowed))} only, not to Host {host!r}: a request "
                "through another name is refused (the DNS-rebinding guard). Open the address `inspect` "
                "printed, or start it with --allowed-host NAME",
                "wrong_host",
            )
        return await call_next(request)

    return guard


def _install_errors(app: FastAPI) -> None:
    """Each error as ``{"error": {"message", "code"}}``: the command line's message, one line."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        answer = error_answer(error.status, error.message, error.code)
        answer.headers.update(error.headers)
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error_answer(
            400, f"{where or 'request'}: {first.get('msg', 'invalid request')}", "invalid_request"
        )

    async def client_error(_: Request, error: Exception) -> JSONResponse:
        if isinstance(error, chunks.ChunkNotFoundError):
            return error_answer(404, one_line(error), "not_found")
        return error_answer(400, one_line(error), "invalid_request")

    async def server_error(_: Request, error: Exception) -> JSONResponse:
        return error_answer(500, one_line(error), type(error).__name__)

    for kind in (UsageError, ValueError, TypeError, LookupError):
        app.add_exception_handler(kind, client_error)
    app.add_exception_handler(Exception, server_error)
