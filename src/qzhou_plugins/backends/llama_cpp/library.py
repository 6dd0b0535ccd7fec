"""llama-cpp-python loaded once per process, llama.cpp's log routed to ours, one copy of each model.

llama.cpp prints everything it does to stderr unless given a log callback; here its lines go to the
``qzhou_plugins.llama_cpp`` logger (warnings and errors at their level, the rest at debug), and the
lines written while a context is made can be read back: they are how llama.cpp reports the
attention it will really run (see :mod:`.context`).

Models are loaded with llama.cpp's extra buffer types off (``use_extra_bufts = False``): with them,
quantised models crash the process on CPUs with AMX. Two backends of one file share one copy of
its weights; the copy is freed when the last backend using it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..base import ModelLoadError

logger_name = "qzhou_plugins.llama_cpp"

LLAMA_EXTRA = "pip install 'qzhou-plugins[llama]'"
_LEVELS = {3: logging.INFO, 4: logging.WARNING}
"""GGML_LOG_LEVEL_WARN -> INFO and _ERROR -> WARNING; every other level (debug, info, cont) is debug.
One step down: llama.cpp warns on every load of sound files (a ``</s>`` in Qwen's vocabulary), and
every failure that matters is raised here as an error that says what happened."""

_lock = threading.RLock()
_state: dict[str, Any] = {}
_capture: list[str] | None = None
_models: weakref.WeakValueDictionary[tuple[str, int], GGUFModel] = weakref.WeakValueDictionary()


def llama_cpp() -> Any:
    """The ``llama_cpp`` module, initialised once, or an error that names the extra to install."""
    with _lock:
        module = _state.get("module")
        if module is not None:
            return module
        try:
            import llama_cpp as module
        except ImportError as error:
            raise ModelLoadError(
                "a .gguf model runs on llama.cpp through llama-cpp-python, which is not installed: "
                f"{LLAMA_EXTRA} (compiled from source: the README gives the Metal and CUDA build flags)"
            ) from error
        module.llama_backend_init()
        _state["callback"] = module.llama_log_callback(_log)  # kept referenced: llama.cpp calls it
        module.llama_log_set(_state["callback"], ctypes.c_void_p(0))
        _state["module"] = module
        return module


def _log(level: int, text: bytes, user_data: Any) -> None:
    try:
        line = text.decode("utf-8", "replace")
        if _capture is not None:
            _capture.append(line)
        logging.getLogger(logger_name).log(_LEVELS.get(level, logging.DEBUG), "%s", line.rstrip())
    except Exception:
        pass


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    """The lines llama.cpp logs during the block (one block at a time in the process)."""
    global _capture
    with _lock:
        _capture = lines = []
        try:
            yield lines
        finally:
            _capture = None


class GGUFModel:
    """A GGUF model in memory: the llama.cpp pointers, its metadata and its sizes."""

    def __init__(self, path: Path, gpu_layers: int) -> None:
        library = llama_cpp()
        params = library.llama_model_default_params()
        params.use_extra_bufts = False
        params.n_gpu_layers = gpu_layers
        with captured_log() as lines:
            pointer = library.llama_model_load_from_file(str(path).encode(), params)
        if not pointer:
            said = " ".join(line.strip() for line in lines if "error" in line.lower())[-400:]
            raise ModelLoadError(
                f"llama.cpp cannot load {path}: {said or 'see the qzhou_plugins.llama_cpp log'}"
            )
        self._library = library
        self.pointer = pointer
        self.path = path
        self.vocab = library.llama_model_get_vocab(pointer)
        self.dimension = int(library.llama_model_n_embd(pointer))
        self.context_length = int(library.llama_model_n_ctx_train(pointer))
        self.metadata = self._metadata()

    def _metadata(self) -> dict[str, str]:
        """Every key of the file with its value as llama.cpp prints it (JSON strings stay JSON)."""
        library, found = self._library, {}
        for index in range(int(library.llama_model_meta_count(self.pointer))):
            key = _read_string(lambda buffer, size, i=index: library.llama_model_meta_key_by_index(
                self.pointer, i, buffer, size))  # fmt: skip
            found[key] = _read_string(lambda buffer, size, i=index: library.llama_model_meta_val_str_by_index(
                self.pointer, i, buffer, size))  # fmt: skip
        return found

    def __del__(self) -> None:
        pointer, self.pointer = getattr(self, "pointer", None), None
        if pointer:
            self._library.llama_model_free(pointer)


def _read_string(call: Any) -> str:
    """A string from a llama.cpp getter that writes into a buffer and returns the full length."""
    size = 256
    while True:
        buffer = ctypes.create_string_buffer(size)
        length = int(call(buffer, size))
        if length < size:
            return buffer.value.decode("utf-8", "replace") if length >= 0 else ""
        size = length + 1


def load_model(path: Path, gpu_layers: int) -> GGUFModel:
    """The model in ``path`` with ``gpu_layers`` layers offloaded; loaded once while it is in use."""
    key = (str(path.resolve()), gpu_layers)
    with _lock:
        model = _models.get(key)
        if model is None:
            model = GGUFModel(path, gpu_layers)
            _models[key] = model
        return model


def loaded_gguf_models() -> list[GGUFModel]:
    """The GGUF models in memory now (freed once no backend uses them)."""
    with _lock:
        return list(_models.values())
