"""The remote reranker: a cross-encoder or LLM reranker served over HTTP (ours, Infinity or TEI).

Three servers, two request shapes, told apart by what the server says of itself before any pair is
sent (:func:`probe`), never by the model's name:

- **ours** (``qzhou-plugins serve --rerank-model``): its ``/models`` card of the model has ``kind``
  and ``score_scale``; pairs go to ``{base_url}/rerank`` in the Cohere shape, with the LLM
  reranker's ``instruction`` as a field, so its scores equal the in-process reranker's.
- **Infinity** (and other Cohere-shaped servers): a ``/models`` entry whose ``capabilities`` hold
  ``rerank``; the same Cohere shape, scores through a sigmoid (a probability).
- **text-embeddings-inference**: no model list; its ``/info`` (at ``base_url``, or its root when
  ``base_url`` ends in ``/v1``, where TEI's OpenAI routes live) says ``model_type: reranker``; pairs
  go to its ``/rerank`` as ``{"query", "texts"}``, scores through a sigmoid.

A foreign server applies its own prompt: an instruction cannot be sent to it and is refused. A
model the server lists without saying it reranks is an embedding model: its reranker is the cosine
over the remote embeddings (today's behaviour, :func:`served_kind` says ``embedding``). Pairs are
grouped by query (one request per query and at most :data:`REQUEST_DOCUMENTS` documents, a few in
flight at once); how requests travel and are retried is :mod:`.transport`'s business.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import RerankerConfig
from ..rerank.formats import score_scale
from .base import RerankerFacts
from .remote import CONCURRENT_REQUESTS, _error_message
from .transport import Answer, RemoteBackendError, Transport

__all__ = ["RemoteReranker", "ServedReranker", "probe", "served_kind"]

REQUEST_DOCUMENTS = 32
"""Documents per request: TEI's default ``--max-client-batch-size``, and far under ours and Infinity's."""
UNKNOWN_MAX_LENGTH = 512
"""The ``max_length`` reported for a foreign server that does not say it: the common cross-encoder's
(the server truncates by its own rule)."""
WHAT = "rerank server"


@dataclass(frozen=True)
class ServedReranker:
    """What a server says of the model it serves, and how to ask it for scores."""

    kind: str | None
    """``embedding``, ``cross-encoder`` or ``llm``; None when the server says nothing of the model."""
    api: str
    """``qzhou`` (our server), ``cohere`` (Infinity, and the guess for an unknown server) or ``tei``."""
    score_scale: str | None = None
    max_length: int | None = None
    position_limit: int | None = None
    root: str | None = None
    """Where TEI's routes are (its ``/info`` answered there); None: ``base_url``."""


def served_kind(config: RerankerConfig) -> str:
    """The kind of reranker the server at ``config.base_url`` serves as ``config.model`` (see the
    module docstring): ``embedding`` unless it says the model reranks."""
    return probe(Transport(config, what=WHAT), config.model).kind or "embedding"


def probe(transport: Transport, model: str) -> ServedReranker:
    """What the server behind ``transport`` says of ``model``: its ``/models`` card, else TEI's ``/info``."""
    entry = _model_entry(transport, model)
    if entry is not None:
        if isinstance(entry.get("kind"), str):  # ours
            return ServedReranker(
                kind=entry["kind"],
                api="qzhou",
                score_scale=str(entry.get("score_scale") or "") or None,
                max_length=_count(entry.get("max_length")),
                position_limit=_count(entry.get("position_limit")),
            )
        if "rerank" in (entry.get("capabilities") or ()):  # Infinity
            return ServedReranker(kind="cross-encoder", api="cohere", score_scale="probability")
        return ServedReranker(kind="embedding", api="cohere")
    base = transport.base_url.rstrip("/")
    roots = [base] + ([base.removesuffix("/v1")] if base.endswith("/v1") else [])
    for root in roots:
        info = _json(_get(transport, root, "/info"))
        model_type = info.get("model_type") if isinstance(info, dict) else None
        if isinstance(model_type, dict) and "reranker" in model_type:
            return ServedReranker(
                kind="cross-encoder",
                api="tei",
                score_scale="probability",
                max_length=_count(info.get("max_input_length")),
                root=root,
            )
    return ServedReranker(kind=None, api="cohere")


def _model_entry(transport: Transport, model: str) -> dict[str, Any] | None:
    """``model``'s entry of ``GET /models``, or None when the server does not list it."""
    answer = transport.request("GET", "/models")
    if answer.status in (401, 403):  # the rest would be refused alike: say so now
        raise RemoteBackendError(
            f"the {WHAT} at {transport.base_url} answered {answer.status}: {_error_message(answer)}"
        )
    listed = _json(answer)
    data = listed.get("data") if isinstance(listed, dict) else None
    entries = [e for e in data or [] if isinstance(e, dict) and e.get("id") == model]
    return entries[0] if entries else None


def _get(transport: Transport, root: str, path: str) -> Answer:
    """``GET root + path`` through ``transport`` (whose own base may be below ``root``)."""
    if root == transport.base_url.rstrip("/"):
        return transport.request("GET", path)
    return Transport(transport.config.model_copy(update={"base_url": root}), what=WHAT).request("GET", path)


def _json(answer: Answer) -> Any:
    if answer.status != 200:
        return None
    try:
        return answer.json()
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class RemoteReranker:
    """Scores (query, document) pairs through a served reranker (see the module docstring)."""

    def __init__(self, config: RerankerConfig) -> None:
        if config.base_url is None:
            raise ValueError("RemoteReranker needs RerankerConfig.base_url")
        decided_there = sorted({"label", "template"} & config.model_fields_set)
        if decided_there:
            raise ValueError(
                f"{', '.join(decided_there)} decide(s) how a reranker scores, but base_url="
                f"{config.base_url!r} names a served one, which scores by its own: leave them out"
            )
        self.config = config
        self.base_url = config.base_url
        self.transport = Transport(config, what=WHAT)
        self.served = probe(self.transport, config.model)
        kind = config.kind or self.served.kind
        if kind is None or kind == "embedding":
            raise RemoteBackendError(
                f"the {WHAT} at {self.base_url} does not say that it reranks with {config.model!r}: give "
                "kind='cross-encoder' if it does (pairs are then sent to its /rerank), or use it as an "
                "embedding reranker"
            )
        if self.served.kind is not None and self.served.kind != kind:
            raise RemoteBackendError(
                f"the {WHAT} at {self.base_url} serves {config.model!r} as a reranker of kind "
                f"{self.served.kind!r}, not {kind!r}: leave kind out"
            )
        self.kind = kind
        if self.served.root is not None:  # TEI's routes, above base_url
            self.transport = Transport(config.model_copy(update={"base_url": self.served.root}), what=WHAT)
        self._facts = self._make_facts()

    def _make_facts(self) -> RerankerFacts:
        served = self.served
        scale = served.score_scale or score_scale(self.kind, self.config.activation)
        max_length = served.max_length or self.config.max_length or UNKNOWN_MAX_LENGTH
        return RerankerFacts(
            model=self.config.model,
            kind=self.kind,
            score_scale=scale,
            max_length=max_length,
            position_limit=served.position_limit or max_length,
            fingerprint={
                "backend": "remote",
                "model": self.config.model,
                "base_url": self.base_url,
                "kind": self.kind,
                "api": served.api,
                "score_scale": scale,
            },
            instructed=self.kind == "llm" and served.api == "qzhou",
        )

    @property
    def facts(self) -> RerankerFacts:
        return self._facts

    def score_pairs(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """One score per pair: one request per query and at most :data:`REQUEST_DOCUMENTS` documents."""
        if instruction is not None and self.served.api != "qzhou":
            raise ValueError(
                f"the {WHAT} at {self.base_url} applies its own prompt to {self.config.model!r} and takes no "
                "instruction: leave instruction out (with kind='cross-encoder', the server's scores as sent)"
            )
        rows: dict[str, list[int]] = {}
        for row, query in enumerate(queries):
            rows.setdefault(query, []).append(row)
        requests = [
            (query, positions[start : start + REQUEST_DOCUMENTS])
            for query, positions in rows.items()
            for start in range(0, len(positions), REQUEST_DOCUMENTS)
        ]
        scores = np.empty(len(queries), dtype=np.float32)
        if not requests:
            return scores

        def post(request: tuple[str, list[int]]) -> np.ndarray:
            query, positions = request
            return self._post(query, [documents[p] for p in positions], instruction)

        with ThreadPoolExecutor(max_workers=min(CONCURRENT_REQUESTS, len(requests))) as pool:
            for (_, positions), values in zip(requests, pool.map(post, requests), strict=True):
                scores[positions] = values
        return scores

    def _post(self, query: str, documents: list[str], instruction: str | None) -> np.ndarray:
        """The scores of ``documents`` against ``query``, in their order, from one request."""
        if self.served.api == "tei":
            body: dict[str, Any] = {"query": query, "texts": documents, "raw_scores": False, "truncate": True}
        else:
            body = {
                "model": self.config.model,
                "query": query,
                "documents": documents,
                "return_documents": False,
            }
            if instruction is not None:
                body["instruction"] = instruction
        answer = self.transport.request("POST", "/rerank", body)
        if answer.status != 200:
            tries = f" (after {answer.tries} tries)" if answer.tries > 1 else ""
            raise RemoteBackendError(
                f"the {WHAT} at {self.transport.base_url} answered {answer.status}{tries}: "
                f"{_error_message(answer)}"
            )
        try:
            listed = answer.json()
            results = listed if self.served.api == "tei" else listed["results"]
            key = "score" if self.served.api == "tei" else "relevance_score"
            by_index = {int(item["index"]): float(item[key]) for item in results}
        except (ValueError, KeyError, TypeError) as error:
            raise RemoteBackendError(
                f"the {WHAT} at {self.transport.base_url} sent a response that is not a rerank result list "
                f"({type(error).__name__}: {error})"
            ) from None
        if sorted(by_index) != list(range(len(documents))):
            raise RemoteBackendError(
                f"the {WHAT} at {self.transport.base_url} sent scores for {len(by_index)} of "
                f"{len(documents)} documents"
            )
        return np.array([by_index[i] for i in range(len(documents))], dtype=np.float32)

    def __repr__(self) -> str:
        where = f"base_url={self.base_url!r}, api={self.served.api!r}"
        return f"RemoteReranker(model={self.config.model!r}, {where})"
