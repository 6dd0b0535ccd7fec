"""The remote backend: a model served over an OpenAI-compatible ``/v1/embeddings`` API.

Our client applies the instructions (the encoder hands it prefixed texts), so the server needs to
know nothing of QZhou's prompt format: ours, vLLM, text-embeddings-inference or Infinity serve the
same vectors. Large inputs are split into requests of bounded size sent concurrently; how requests
travel, are limited, timed out and retried is :mod:`.transport`'s business, and every failure
becomes a :class:`RemoteBackendError` that says which server answered what.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..config import QZHOU_DEFAULT_MAX_LENGTH, EncoderConfig
from ..families import ModelFamily, family_by_name, family_named, known_families
from ..instructions import PromptStyle
from .base import BackendFacts, unit_rows
from .transport import Answer, RemoteBackendError, Transport

__all__ = ["RemoteBackend", "RemoteBackendError"]

REQUEST_TEXTS = 64
"""Texts per request: small enough for any server's limits, large enough to batch well there."""
CONCURRENT_REQUESTS = 4
"""Requests in flight for one call's texts (many concurrent calls are many more)."""
SERVED_FAMILY = "served"
"""The family of a served model whose family no one says: no instructions but the caller's own."""


class RemoteBackend:
    """Embeds prefixed texts through a served model (see the module docstring)."""

    def __init__(self, config: EncoderConfig) -> None:
        if config.base_url is None:
            raise ValueError("RemoteBackend needs EncoderConfig.base_url")
        self.config = config
        self.base_url = config.base_url
        self.transport = Transport(config)
        self._facts = self._learn_facts()

    @property
    def facts(self) -> BackendFacts:
        return self._facts

    def count_tokens(self, texts: Sequence[str]) -> list[int] | None:
        return None  # the OpenAI API has no tokenizer route; the server truncates and says so

    # -- facts ---------------------------------------------------------------------------------------

    def _learn_facts(self) -> BackendFacts:
        """The served model's facts: from our server's ``/models`` entry, else from a probe."""
        entry = self._model_entry()
        family = self._family(entry)
        dimension = entry.get("dimension")
        if not isinstance(dimension, int):
            dimension = int(self._post_embeddings(["dimension probe"]).shape[1])
        # The pooling the server applies: as it says, else as the user declares, else its family's.
        pooling = entry.get("pooling") or self.config.pooling or (family.pooling if family else "unknown")
        saved = entry.get("saved_prompts")
        return BackendFacts(
            model=self.config.model,
            dimension=dimension,
            max_length=int(entry.get("max_length") or self.config.max_length or QZHOU_DEFAULT_MAX_LENGTH),
            position_limit=int(entry.get("position_limit") or entry.get("max_length") or 10**9),
            prompt_style=family.prompt_style(saved if isinstance(saved, dict) else None)
            if family is not None
            else PromptStyle(),
            family=family.name if family is not None else SERVED_FAMILY,
            pooling=str(pooling),
            normalized=self.config.normalize,
            fingerprint={
                "backend": "remote",
                "model": self.config.model,
                "base_url": self.base_url,
                "pooling": str(pooling),
                "normalize": str(self.config.normalize),
            },
        )

    def _family(self, entry: dict[str, Any]) -> ModelFamily | None:
        """The served model's family: as our server says (``/models``), else as the caller names it
        (``family=``), else as the model's name says (the records' names), else unknown (None)."""
        said = entry.get("family")
        if isinstance(said, str) and said in known_families():
            if self.config.family is not None and self.config.family != said:
                raise ValueError(
                    f"family={self.config.family!r}, but the server at {self.base_url} serves "
                    f"{self.config.model!r} as a {said!r} model: leave family unset, or serve it with "
                    f"--family {self.config.family}"
                )
            return family_named(said)
        if self.config.family is not None:
            return family_named(self.config.family)
        return family_by_name(self.config.model)

    def _model_entry(self) -> dict[str, Any]:
        """This model's entry of ``GET /models`` ({} when the server does not list it)."""
        answer = self.transport.request("GET", "/models")
        try:
            listed = (answer.json().get("data") or []) if answer.status == 200 else []
        except (ValueError, AttributeError):
            listed = []  # not a model list: the probe in _learn_facts tells the rest
        entries = [e for e in listed if isinstance(e, dict) and e.get("id") == self.config.model]
        return entries[0] if entries else {}

    # -- embedding -----------------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        chunks = [list(texts[i : i + REQUEST_TEXTS]) for i in range(0, len(texts), REQUEST_TEXTS)]
        if not chunks:
            return np.zeros((0, self.facts.dimension), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=min(CONCURRENT_REQUESTS, len(chunks))) as pool:
            rows = list(pool.map(self._post_embeddings, chunks))
        return self._finish(np.concatenate(rows))

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed` without a thread: requests go out concurrently on the running event loop."""
        chunks = [list(texts[i : i + REQUEST_TEXTS]) for i in range(0, len(texts), REQUEST_TEXTS)]
        if not chunks:
            return np.zeros((0, self.facts.dimension), dtype=np.float32)
        if len(chunks) == 1:  # the common case of a query: no semaphore, no gather
            return self._finish(await self._apost_embeddings(chunks[0]))
        limit = asyncio.Semaphore(CONCURRENT_REQUESTS)

        async def one(chunk: list[str]) -> np.ndarray:
            async with limit:
                return await self._apost_embeddings(chunk)

        rows = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return self._finish(np.concatenate(rows))

    def _finish(self, rows: np.ndarray) -> np.ndarray:
        """Rows as float32, unit length when asked (idempotent for a server that normalises)."""
        rows = rows.astype(np.float32, copy=False)
        return unit_rows(rows).astype(np.float32, copy=False) if self.config.normalize else rows

    def _body(self, texts: list[str]) -> dict[str, Any]:
        # No extension fields: the texts carry their prefixes, and a strict server may refuse extras.
        return {"model": self.config.model, "input": texts, "encoding_format": "base64"}

    def _post_embeddings(self, texts: list[str]) -> np.ndarray:
        return self._rows(self.transport.request("POST", "/embeddings", self._body(texts)), len(texts))

    async def _apost_embeddings(self, texts: list[str]) -> np.ndarray:
        return self._rows(await self.transport.arequest("POST", "/embeddings", self._body(texts)), len(texts))

    def _rows(self, answer: Answer, expected: int) -> np.ndarray:
        """The float32 rows of an embeddings answer, in input order, or a clear error."""
        if answer.status != 200:
            tries = f" (after {answer.tries} tries)" if answer.tries > 1 else ""
            raise RemoteBackendError(
                f"the embedding server at {self.base_url} answered {answer.status}{tries}: "
                f"{_error_message(answer)}"
            )
        try:
            data = sorted(answer.json()["data"], key=lambda item: item["index"])
            rows = [_decode(item["embedding"]) for item in data]
        except (ValueError, KeyError, TypeError) as error:
            raise RemoteBackendError(
                f"the embedding server at {self.base_url} sent a response that is not an OpenAI "
                f"embeddings list ({type(error).__name__}: {error})"
            ) from None
        if len(rows) != expected or len({row.shape for row in rows}) > 1:
            raise RemoteBackendError(
                f"the embedding server at {self.base_url} sent {len(rows)} vectors for {expected} texts"
            )
        return np.stack(rows)

    def __repr__(self) -> str:
        return f"RemoteBackend(model={self.config.model!r}, base_url={self.base_url!r})"


def _decode(embedding: Any) -> np.ndarray:
    if isinstance(embedding, str):  # base64 of little-endian float32, as the OpenAI API sends it
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def _error_message(answer: Answer) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.body.decode("utf-8", "replace")[:300] or answer.reason
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return (
        str(body.get("detail") or body.get("message") or body)[:300] if isinstance(body, dict) else str(body)
    )
