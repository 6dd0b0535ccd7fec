"""Refusing what the server cannot afford before it costs anything.

Two limits come before the ones on texts and tokens (which need the body parsed and tokenised):

- **the body**, ``--max-body-bytes``: a declared ``Content-Length`` over it is answered 413 before a
  byte of the body is read; a chunked body is read only until it passes the limit. Either way the
  answer closes the connection, so the rest of the body is not read either.
- **each text**, :data:`CHARS_PER_TOKEN` characters per token of ``max_length``: a text far longer
  than the model reads would otherwise be tokenised in full (64 MB: minutes) only to be cut.

Both answer 413 in OpenAI's error shape, within a request's parsing time, whatever else the
server is doing: the body check runs on the event loop before the route, the text check before any
tokenisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..validation import positions
from .errors import ApiError, error_response
from .metrics import ServerMetrics

CHARS_PER_TOKEN = 128
"""The most characters one token covers in the tokenizers we serve, so that no text that fits in
``max_length`` tokens is refused. Qwen2.5's (QZhou's) longest tokens are 128 characters (a run of
spaces; the longest others are runs of ``-`` or ``/`` of about 100); BERT-style WordPiece
(all-MiniLM-L6-v2) has no entry over 18 characters and turns any word over 100 characters into one
``[UNK]``. Only text padded with long runs of what WordPiece drops (white space, control
characters) could hold more, and then it holds nothing the model reads."""

BODY_TOO_LARGE = "body_too_large"


def character_limit(max_length: int) -> int:
    """The most characters one text may have for a model that reads ``max_length`` tokens."""
    return CHARS_PER_TOKEN * max_length


def check_text_lengths(texts: Sequence[Any], what: str, max_length: int, *, one: bool = False) -> None:
    """413 for texts longer than :func:`character_limit` (non-strings are left to validation);
    ``one``: ``texts`` holds the one text of ``what`` (a query), not items of a list."""
    limit = character_limit(max_length)
    over = [i for i, text in enumerate(texts) if isinstance(text, str) and len(text) > limit]
    if over:
        longest = max(len(texts[i]) for i in over)
        where = what if one else f"{what} at position(s) {positions(over)}"
        size = f"holds {longest}" if len(over) == 1 else f"hold up to {longest}"
        raise ApiError(
            413,
            f"{where} {size} characters and this server takes at most {limit} per text "
            f"({CHARS_PER_TOKEN} per token of max_length {max_length}): the model reads only the first "
            f"{max_length} tokens of a text. Cut it into chunks",
            code="text_too_long",
            param=what,
        )


class BodyLimitMiddleware:
    """Answers 413 to a request body over ``max_bytes`` without reading it (a plain ASGI middleware)."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ServerMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await self._refuse(scope, send, f"holds {int(declared)} bytes")
                return
            await self.app(scope, receive, send)  # the server reads no more than it declares
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await self._read_chunked(scope, receive, send)
        else:
            await self.app(scope, receive, send)  # no body

    async def _read_chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a body of unknown length up to the limit, then hand it to the app as if just received."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, send, f"passed {self.max_bytes} bytes, and it was not read further")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect that the app may wait for
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        message = (
            f"the request body {what}; this server takes at most {self.max_bytes} bytes per request "
            "(--max-body-bytes): split it into smaller requests"
        )
        self.metrics.error(scope.get("path", ""), BODY_TOO_LARGE)
        # Closing the connection is what stops the client's upload: kept alive, the rest of the body
        # would still have to be read (and thrown away) before the next request.
        response = error_response(413, message, code=BODY_TOO_LARGE, headers={"Connection": "close"})

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)
