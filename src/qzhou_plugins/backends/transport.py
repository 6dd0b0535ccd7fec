"""How the remote backend talks HTTP: a sync client, an aiohttp session per event loop, one retry rule.

The sync path (``embed``, called from threads) uses one thread-safe ``httpx.Client``. The async path
uses aiohttp, whose client holds up under hundreds of concurrent requests where httpx's async client
does not (measured against ``/health``: 2,587 against 88 requests/s). An aiohttp session belongs to
the event loop it was made on, and an encoder is shared process-wide (``Encoder.shared``) and awaited
from whatever loop its caller runs (``asyncio.run`` in one thread, then another), so each loop gets a
session of its own, kept for the loop's life and closed before the loop closes: asyncio closes every
live async generator of a loop first (``loop.shutdown_asyncgens``, which ``asyncio.run`` calls), and
one suspended generator per session is that hook. A session whose loop was closed without it is
dropped at the next call (its sockets go with it).

Both paths try a request again after 429, 502, 503 or 504 (a rate limit, a full queue, a gateway) and
after a connection that failed or broke, waiting the server's ``Retry-After`` or an exponential
backoff; an answer that takes longer than ``timeout`` is not sent again (the server may still be
working on it). After the last try, the caller gets a :class:`RemoteBackendError` naming the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from ..config import EncoderConfig

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that say "not now": the same request may succeed later. A 500 is the server's own
failure on this input, which a retry would only repeat."""
MAX_RETRY_AFTER = 30.0
"""The longest ``Retry-After`` honoured, so that a server cannot park a client for hours."""


class RemoteBackendError(RuntimeError):
    """The served model could not be used; the message names the server and its answer."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read in full, the same whichever client fetched it."""

    status: int
    body: bytes
    reason: str
    retry_after: str | None
    tries: int
    """How many times the request was sent to get this answer."""

    def json(self) -> Any:
        return json.loads(self.body)


class Transport:
    """Requests to one served model's API, sync or async, with ``config``'s limits and retries;
    ``what`` names the server in errors (an embedding server, a rerank server)."""

    def __init__(self, config: EncoderConfig, *, what: str = "embedding server") -> None:
        if config.base_url is None:
            raise ValueError("Transport needs EncoderConfig.base_url")
        self.base_url = config.base_url
        self.config = config
        self.what = what
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.Client(
            headers=self._headers,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(
                max_connections=config.max_connections, max_keepalive_connections=config.max_connections
            ),
        )
        # The sync client's kept-alive sockets close when this transport is collected, not at exit.
        weakref.finalize(self, self._client.close)
        self._sessions: dict[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, Any]] = {}
        self._lock = threading.Lock()

    # -- sync --------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        """``method path`` answered, after the retries that ``config`` allows."""
        for attempt in range(self.config.retries + 1):
            answer = error = None
            try:
                response = self._client.request(method, self.base_url + path, json=body)
                answer = Answer(
                    response.status_code,
                    response.content,
                    response.reason_phrase,
                    response.headers.get("retry-after"),
                    attempt + 1,
                )
            except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as timeout:
                raise self._timed_out(timeout) from None
            except httpx.TransportError as failure:  # refused, reset, connect timeout: try again
                error = failure
            wait = self._wait_before_retry(attempt, answer, error)
            if wait is None:
                return answer  # type: ignore[return-value]  (None only with an error, which raised)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- async -------------------------------------------------------------------------------------

    async def arequest(self, method: str, path: str, body: Any = None) -> Answer:
        """:meth:`request` on the running event loop, through that loop's session."""
        session = await self._session()
        for attempt in range(self.config.retries + 1):
            answer = error = None
            try:
                async with session.request(method, self.base_url + path, json=body) as response:
                    content = await response.read()
                    answer = Answer(
                        response.status,
                        content,
                        response.reason or "",
                        response.headers.get("Retry-After"),
                        attempt + 1,
                    )
            except aiohttp.ConnectionTimeoutError as failure:  # before the connection: try again
                error = failure
            except asyncio.TimeoutError as timeout:  # after it: the server may still be working
                raise self._timed_out(timeout) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as failure:  # broke
                error = failure
            wait = self._wait_before_retry(attempt, answer, error)
            if wait is None:
                return answer  # type: ignore[return-value]
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _session(self) -> aiohttp.ClientSession:
        """The running loop's session, made on its first request and closed before the loop closes."""
        loop = asyncio.get_running_loop()
        with self._lock:
            orphans = [self._sessions.pop(other)[0] for other in list(self._sessions) if other.is_closed()]
            held = self._sessions.get(loop)
        for orphan in orphans:  # their loops closed without shutdown_asyncgens
            _close_without_loop(orphan)
        if held is not None and not held[0].closed:
            return held[0]
        session = aiohttp.ClientSession(
            headers=self._headers,
            connector=aiohttp.TCPConnector(limit=self.config.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=self.config.timeout, sock_connect=self.config.connect_timeout
            ),
        )
        closer = self._close_with_loop(loop, session)
        with self._lock:
            self._sessions[loop] = (session, closer)  # the closer too: collected, it would close early
        await closer.__anext__()  # registered with the loop, suspended until the loop shuts down
        return session

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession
    ) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                if self._sessions.get(loop, (None,))[0] is session:
                    del self._sessions[loop]
            await session.close()

    def open_sessions(self) -> int:
        """Sessions held now: one per event loop that made requests and has not shut down."""
        with self._lock:
            return sum(1 for loop in self._sessions if not loop.is_closed())

    # -- the retry rule ----------------------------------------------------------------------------

    def _wait_before_retry(
        self, attempt: int, answer: Answer | None, error: Exception | None
    ) -> float | None:
        """Seconds to wait before the next try, or None when ``answer`` is final; raises when a
        connection error was the last try."""
        last = attempt >= self.config.retries
        if error is not None:
            if last:
                raise RemoteBackendError(
                    f"the {self.what} at {self.base_url} cannot be reached after {attempt + 1} tries "
                    f"({type(error).__name__}: {error})"
                ) from None
            return self._backoff(attempt, None)
        assert answer is not None
        if answer.status not in RETRIED_STATUSES or last:
            return None
        return self._backoff(attempt, answer.retry_after)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """The server's ``Retry-After`` (seconds) when it sent one, else ``retry_backoff`` doubling."""
        try:
            return min(max(float(retry_after or ""), 0.0), MAX_RETRY_AFTER)
        except ValueError:  # absent, or an HTTP date: our own backoff
            return float(self.config.retry_backoff * 2**attempt)

    def _timed_out(self, error: Exception) -> RemoteBackendError:
        return RemoteBackendError(
            f"the {self.what} at {self.base_url} did not answer within timeout={self.config.timeout} s "
            f"({type(error).__name__}); not tried again, as it may still be working: raise timeout for "
            "long requests, or send fewer texts per call"
        )

    def close(self) -> None:
        """Close the sync client (each loop's session closes with its loop)."""
        self._client.close()


def _close_without_loop(session: aiohttp.ClientSession) -> None:
    """Close a session whose loop is closed. aiohttp then has nothing to await (it drops its
    connections, whose sockets the garbage collector closes), so the coroutine finishes in one step;
    closed, the session is not reported as leaked."""
    closing = session.close()
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()  # it wanted to wait after all: leave it to the garbage collector
