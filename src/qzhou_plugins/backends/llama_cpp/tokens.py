"""Texts into the very token ids the Hugging Face tokenizer gives, with llama.cpp's vocabulary.

Two differences would otherwise remain. llama.cpp either parses every special-looking token in a
text or none: Hugging Face parses exactly its added tokens (``<|im_start|>``, ``[CLS]``), and
llama.cpp also takes tokens that merely look special (Qwen's ``</s>``, an ordinary token there).
So a text is split on the added tokens the file records, and only the pieces in between go through
llama.cpp's tokenizer, parsing nothing. And a truncated text keeps the model's own special tokens
([CLS] ... [SEP] for BERT; QZhou adds none), as Hugging Face truncation does.
"""

from __future__ import annotations

import ctypes
import json
import re

from .keys import ADDED_TOKENS
from .library import GGUFModel, llama_cpp


class Tokenizer:
    """The tokenizer of a GGUF model (see the module docstring)."""

    def __init__(self, model: GGUFModel) -> None:
        self.model = model
        recorded = model.metadata.get(ADDED_TOKENS)
        self._added: dict[str, int] = {}
        for token in json.loads(recorded) if recorded else []:
            ids = self._llama(token, parse_special=True)
            if len(ids) == 1:
                self._added[token] = ids[0]
        ordered = sorted(self._added, key=len, reverse=True)  # the longest of overlapping tokens wins
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        body, full = self.tokens("a"), self._llama("a", parse_special=False, add_special=True)
        start = next(i for i in range(len(full) - len(body) + 1) if full[i : i + len(body)] == body)
        self.prefix: list[int] = full[:start]
        self.suffix: list[int] = full[start + len(body) :]

    @property
    def special_count(self) -> int:
        """The special tokens the model puts around every text."""
        return len(self.prefix) + len(self.suffix)

    def tokens(self, text: str) -> list[int]:
        """The ids of ``text`` alone: its added tokens parsed, no special tokens around it."""
        if self._pattern is None:  # a file from elsewhere: llama.cpp's own parsing of special tokens
            return self._llama(text, parse_special=True)
        ids: list[int] = []
        start = 0
        for match in self._pattern.finditer(text):
            if match.start() > start:
                ids += self._llama(text[start : match.start()], parse_special=False)
            ids.append(self._added[match.group()])
            start = match.end()
        if start < len(text):
            ids += self._llama(text[start:], parse_special=False)
        return ids

    def encode(self, text: str, max_length: int) -> tuple[list[int], bool]:
        """The ids the model sees for ``text``, cut to ``max_length`` with its special tokens kept,
        and whether it was cut."""
        body = self.tokens(text)
        room = max_length - self.special_count
        return self.prefix + body[:room] + self.suffix, len(body) > room

    def _llama(self, text: str, *, parse_special: bool, add_special: bool = False) -> list[int]:
        library, data = llama_cpp(), text.encode("utf-8")
        size = len(data) + 8
        while True:
            buffer = (ctypes.c_int32 * size)()
            count = int(
                library.llama_tokenize(
                    self.model.vocab, data, len(data), buffer, size, add_special, parse_special
                )
            )
            if count >= 0:
                return list(buffer[:count])
            size = -count
