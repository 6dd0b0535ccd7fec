"""The process-wide weights: one copy of each model in memory, whatever asks for it.

A 7B model is 15 GB in bf16; two adapters that each load their own copy would double that. Every
local backend therefore gets its weights from here, keyed by what changes the weights in memory
(checkpoint path, device, dtype, attention), while options that only change how texts are encoded
(instructions, batch budget, normalisation) stay per backend. This module holds weights only: the
shared encoders are the encoder's own business.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...config import EncoderConfig

if TYPE_CHECKING:  # torch and transformers only once a model is asked for
    from .loading import LoadedModel

_lock = threading.RLock()
_models: dict[tuple[str, ...], Any] = {}
_model_locks: dict[tuple[str, ...], threading.Lock] = {}


def get_model(config: EncoderConfig) -> LoadedModel:
    """The loaded weights for ``config``, loading them on first use (once, even under threads).

    A family named (``family="bert"``, as a reopened collection replays it) that is the family the
    checkpoint was recognised as when loaded without one gets those same weights, not a second copy.
    """
    from .loading import load_model, weights_key

    if config.family is not None:
        with _lock:
            recognised = _models.get(weights_key(config.model_copy(update={"family": None})))
        if recognised is not None and recognised.family == config.family:
            return recognised  # type: ignore[no-any-return]
    return get_or_load(weights_key(config), lambda: load_model(config))  # type: ignore[no-any-return]


def get_or_load(key: tuple[str, ...], load: Callable[[], Any]) -> Any:
    """The weights known by ``key``, made by ``load`` on first use (once, even under threads): an
    encoder's and a reranker's alike (a reranker's key adds its kind: another head in memory)."""
    with _lock:
        loaded = _models.get(key)
        if loaded is None:
            loaded = load()
            _models[key] = loaded
            _model_locks[key] = threading.Lock()
        return loaded


def inference_lock(loaded: LoadedModel) -> threading.Lock:
    """The lock that lets one forward pass at a time use ``loaded``.

    Two passes at once on one CPU fight over the same cores and on one GPU double the memory peak;
    queueing them costs nothing in throughput and keeps both predictable.
    """
    with _lock:
        return _model_locks.setdefault(loaded.key, threading.Lock())


def loaded_models() -> list[Any]:
    """Every set of weights in memory now; its length is the number of models loaded."""
    with _lock:
        return list(_models.values())


_release_hooks: list[Callable[[], None]] = []


def at_release(hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever the weights are released: what holds a backend (the shared rerankers)
    lets go of it too, without this module knowing who they are."""
    with _lock:
        if hook not in _release_hooks:
            _release_hooks.append(hook)


def release_weights() -> None:
    """Forget every loaded model so that its memory can be freed once no backend holds it."""
    with _lock:
        hooks = list(_release_hooks)
        _models.clear()
        _model_locks.clear()
    for hook in hooks:
        hook()
    gc.collect()
