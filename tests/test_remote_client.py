"""The remote backend's HTTP client: retries, timeouts, connection limits and one session per event loop.

The misbehaving server is a real process on 127.0.0.1 (``tests/flaky_server.py``, the standard
library only) whose path says how to fail: 429/503 for the first tries, a dropped connection, a slow
answer. Its vectors are a hash of each text, so every answer is checked row by row. Concurrency and
vectors against our own server are in ``tests/test_remote.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from flaky_server import MODEL, vector
from qzhou_plugins import Encoder, EncoderConfig
from qzhou_plugins.backends.remote import RemoteBackendError
from qzhou_plugins.backends.transport import Transport
from servers import free_port, running

TEXTS = ["green tea", "black tea", "oolong"]
FAST = {"retry_backoff": 0.01}
"""Retries a test waits for: the rule is the same, the waits short."""


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    script = Path(__file__).with_name("flaky_server.py")
    log = tmp_path_factory.mktemp("flaky") / "server.log"
    with running([sys.executable, str(script), str(port)], f"http://127.0.0.1:{port}/health", log):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def client(flaky: str) -> Callable[..., tuple[Encoder, Callable[[], list[str]]]]:
    """An encoder on the flaky server misbehaving by ``rule``, and what the server logged of it."""

    def make(rule: str, **options: Any) -> tuple[Encoder, Callable[[], list[str]]]:
        tag = uuid.uuid4().hex[:12]
        encoder = Encoder(model=MODEL, base_url=f"{flaky}/{tag}/{rule}/v1", normalize=False, **options)
        return encoder, lambda: [what for _, what in httpx.get(f"{flaky}/log/{tag}").json()]

    return make


def expected(texts: list[str]) -> np.ndarray:
    return np.asarray([vector(text) for text in texts], dtype=np.float32)


def embed(encoder: Encoder, way: str, texts: list[str] = TEXTS) -> np.ndarray:
    if way == "sync":
        return encoder.encode(texts)
    return asyncio.run(encoder.aencode(texts))


WAYS = ["sync", "async"]


# -- retries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("rule", ["503x2", "429x2", "dropx1"])
def test_retried_until_the_server_answers(client: Callable[..., Any], way: str, rule: str) -> None:
    encoder, tries = client(rule, **FAST)
    np.testing.assert_array_equal(embed(encoder, way), expected(TEXTS))
    failed = rule[: rule.index("x")]
    assert tries()[-1] == "200" and failed in tries(), tries()
    if failed != "drop":  # aiohttp itself sends once more when a kept-alive connection drops
        assert tries() == [failed, failed, "200"]


@pytest.mark.parametrize("way", WAYS)
def test_retry_after_is_honoured(client: Callable[..., Any], way: str, flaky: str) -> None:
    encoder, _ = client("503x1ra1", **FAST)
    tag = encoder.config.base_url.split("/")[3]  # type: ignore[union-attr]
    np.testing.assert_array_equal(embed(encoder, way), expected(TEXTS))
    (failed_at, failed), (answered_at, answered) = httpx.get(f"{flaky}/log/{tag}").json()
    assert (failed, answered) == ("503", "200")
    gap = answered_at - failed_at
    print(f"Retry-After: 1 -> the retry came {gap:.2f} s later")
    assert gap >= 0.9  # the server's wait, not retry_backoff's 0.01 s


@pytest.mark.parametrize("way", WAYS)
def test_after_the_last_retry_a_clear_error(client: Callable[..., Any], way: str) -> None:
    encoder, tries = client("503x99", retries=2, **FAST)
    url = encoder.config.base_url
    with pytest.raises(RemoteBackendError, match=rf"at {url} answered 503 \(after 3 tries\): try 3: 503 on"):
        embed(encoder, way)
    assert tries() == ["503"] * 3
    once, tries = client("429x99", retries=0)
    with pytest.raises(RemoteBackendError, match=r"answered 429: try 1: 429 on purpose"):
        embed(once, way)
    assert tries() == ["429"]


@pytest.mark.parametrize("way", WAYS)
def test_a_slow_answer_times_out_and_is_not_sent_again(client: Callable[..., Any], way: str) -> None:
    encoder, tries = client("sleep3", timeout=0.5)
    with pytest.raises(RemoteBackendError, match=r"did not answer within timeout=0.5 s.*not tried again"):
        embed(encoder, way)
    assert tries() == ["sleep"]


def test_an_unreachable_server_after_the_retries_async_too() -> None:
    config = EncoderConfig(model=MODEL, base_url=f"http://127.0.0.1:{free_port()}/v1", retries=1, **FAST)
    transport = Transport(config)
    with pytest.raises(RemoteBackendError, match=r"cannot be reached after 2 tries"):
        asyncio.run(transport.arequest("GET", "/models"))
    with pytest.raises(RemoteBackendError, match=r"cannot be reached after 2 tries"):
        transport.request("GET", "/models")


# -- options -----------------------------------------------------------------------------------------


def test_client_options_need_a_base_url_and_reach_both_clients(flaky: str) -> None:
    from qzhou_plugins.langchain import QZhouEmbeddings

    for option in ({"retries": 2}, {"timeout": 5.0}, {"max_connections": 8}, {"api_key": "k"}):
        name = next(iter(option))
        with pytest.raises(ValueError, match=rf"{name} configure\(s\) the HTTP client.*base_url"):
            EncoderConfig(model=MODEL, **option)
        with pytest.raises(ValidationError, match="configure"):
            QZhouEmbeddings(model=MODEL, **option)  # refused before any model is loaded
    bad_values = [
        {"max_connections": 0},
        {"max_connections": True},
        {"retries": -1},
        {"connect_timeout": 0},
        {"timeout": True},  # not 1 second
        {"timeout": "5"},
        {"retry_backoff": float("nan")},
    ]
    for bad in bad_values:
        with pytest.raises(ValidationError, match=next(iter(bad))):
            EncoderConfig(model=MODEL, base_url=flaky + "/v1", **bad)
        with pytest.raises(ValidationError, match=next(iter(bad))):
            QZhouEmbeddings(model=MODEL, base_url=flaky + "/v1", **bad)
    tag = uuid.uuid4().hex[:12]
    options = {"max_connections": 2, "connect_timeout": 3.0, "timeout": 7.0}
    embeddings = QZhouEmbeddings(model=MODEL, base_url=f"{flaky}/{tag}/ok/v1", normalize=False, **options)
    transport: Transport = embeddings.encoder.backend.transport  # type: ignore[attr-defined]
    assert transport._client.timeout == httpx.Timeout(7.0, connect=3.0)

    async def session_settings() -> tuple[int, float | None, float | None]:
        session = await transport._session()
        return session.connector.limit, session.timeout.total, session.timeout.sock_connect  # type: ignore[union-attr]

    assert asyncio.run(session_settings()) == (2, 7.0, 3.0)


# -- event loops -------------------------------------------------------------------------------------


def test_one_session_per_event_loop_closed_with_its_loop(
    client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    encoder, _ = client("ok")
    transport: Transport = encoder.backend.transport  # type: ignore[attr-defined]

    async def calls() -> tuple[Any, np.ndarray]:
        session = await transport._session()
        rows = await asyncio.gather(*(encoder.aencode([text]) for text in TEXTS * 10))
        assert await transport._session() is session  # long-lived: every call of this loop
        return session, np.concatenate(rows)

    first, rows = asyncio.run(calls())
    second, again = asyncio.run(calls())  # the same encoder on a new loop: a new session
    assert first is not second and first.closed and second.closed and transport.open_sessions() == 0
    np.testing.assert_array_equal(rows, expected(TEXTS * 10))
    np.testing.assert_array_equal(again, rows)

    both_live = threading.Barrier(2, timeout=30)
    seen: dict[str, Any] = {}

    def in_thread(name: str) -> None:
        async def work() -> None:
            session, rows = await calls()
            await asyncio.to_thread(both_live.wait)
            seen[name] = (session, rows, transport.open_sessions())
            await asyncio.to_thread(both_live.wait)  # neither loop ends before both have counted

        asyncio.run(work())

    threads = [threading.Thread(target=in_thread, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    (session_a, rows_a, open_a), (session_b, rows_b, open_b) = seen["a"], seen["b"]
    assert session_a is not session_b and open_a == open_b == 2
    assert session_a.closed and session_b.closed and transport.open_sessions() == 0
    np.testing.assert_array_equal(rows_a, rows)
    np.testing.assert_array_equal(rows_b, rows)

    # A loop closed by hand, without shutting down its async generators: its session is dropped
    # (closed) at the next call, from any loop, and nothing is reported as leaked.
    loop = asyncio.new_event_loop()
    orphan, _ = loop.run_until_complete(calls())
    loop.close()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        np.testing.assert_array_equal(asyncio.run(calls())[1], rows)
        del orphan, loop
        import gc

        gc.collect()
    assert transport.open_sessions() == 0
    assert "Unclosed" not in caplog.text
