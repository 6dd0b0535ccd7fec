"""Every error as OpenAI's JSON: ``{"error": {"message", "type", "param", "code"}}``.

OpenAI clients read that shape (the ``openai`` SDK puts ``message`` in its exception, LangChain and
LlamaIndex show it), so a client learns what was wrong with its request instead of seeing FastAPI's
default 422 list or a stack trace. Request validation errors are 400, as OpenAI answers them.
"""

from __future__ import annotations

import logging
from typing import Any

from .extra import require_serve_extra

require_serve_extra()

from fastapi import FastAPI, Request  # noqa: E402  (after the check that names the missing extra)
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from .metrics import ServerMetrics  # noqa: E402

logger = logging.getLogger("qzhou_plugins.server")

ROUTE_LIST = "POST /v1/embeddings, POST /v1/rerank (or /rerank), GET /v1/models, GET /health and GET /metrics"

RETRY_AFTER_SECONDS = 1
"""What a 503 tells clients to wait; the ``openai`` SDK honours ``Retry-After`` when it retries."""


class ApiError(Exception):
    """An error the client caused or can act on, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def unavailable(message: str, *, code: str) -> ApiError:
    """A 503 with ``Retry-After``: the request was fine, the server cannot take it right now."""
    return ApiError(503, message, code=code, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def error_type(status: int) -> str:
    """OpenAI's ``type`` for a status: client errors are ``invalid_request_error``."""
    if status == 401:
        return "authentication_error"
    return "invalid_request_error" if status < 500 else "server_error"


def error_response(
    status: int, message: str, *, code: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """One readable sentence (and the field) from pydantic's list of request errors."""
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = location[0] if location else None
    kind = first.get("type", "")
    if kind == "json_invalid":
        message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
        field = None
    elif kind == "extra_forbidden":
        message = f"unknown field {field!r} (see the API in docs/serving.md)"
    elif field is None:  # no body, or a body that was not sent as JSON
        message = "the request body must be a JSON object, sent with 'Content-Type: application/json'"
    else:
        message = f"{'.'.join(location)}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return message, field


def install_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Answer every failure of ``app`` in OpenAI's error shape, and count it."""

    def answer(request: Request, status: int, message: str, **fields: Any) -> JSONResponse:
        metrics.error(request.url.path, fields["code"])
        return error_response(status, message, **fields)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return answer(
            request, error.status, error.message, code=error.code, param=error.param, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, field = validation_message(list(error.errors()))
        return answer(request, 400, message, code="invalid_request", param=field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = str(error.detail)
        if error.status_code in (404, 405):
            message = f"{message}: {request.method} {request.url.path}; this server serves {ROUTE_LIST}"
        return answer(request, error.status_code, message, code=code, headers=dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        message = f"internal server error: {type(error).__name__}: {error}"
        return answer(request, 500, message, code="internal")
