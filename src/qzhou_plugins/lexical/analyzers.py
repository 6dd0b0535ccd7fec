"""Analyzers: text in, the index's terms out, the same function for documents and queries.

The engines never tokenize: both receive the terms made here (FTS5 as a space-joined string that its
``ascii`` tokenizer splits back exactly, tantivy as a pre-tokenized string), so the two engines
index the same terms and a query can never reach an engine's own query syntax.

- ``english`` (the default): Unicode NFKC, case folding, word tokens (letters and digits; a ``.``
  between digits and an apostrophe inside a word join, as in ``3.5``, ``v1.2.3`` and ``don't``; a
  possessive ``'s`` is dropped), Lucene's 33 English stopwords, then the Snowball English stemmer
  (PyStemmer: the ``lexical`` extra, which the ``chroma`` extra includes).
- ``chinese``: runs of Chinese (or Japanese) characters are segmented by jieba in its search mode
  (each word and the dictionary words inside it: ``中华人民共和国`` also gives ``人民``, ``共和国``),
  everything else is analyzed as ``english`` (Latin words stemmed). jieba is the ``chinese`` extra.
- ``auto``: the same, with jieba's precise mode (one segmentation, a smaller index): a text without
  Chinese or Japanese characters gets exactly the ``english`` terms, so a mostly English collection
  with some Chinese loses nothing by choosing it.

Chinese terms keep their function words (的, 了, 是): on the Chinese STS-B pairs used as a retrieval
task (tests/test_lexical.py), dropping them lowered the partner found first from 76.1% to 75.4%
(search mode) and from 73.9% to 73.3% (precise mode); whole unsegmented runs, what a plain
``unicode61`` tokenizer gives, found it 14.0% of the time. IDF already makes frequent words cheap.

Terms longer than :data:`MAX_TERM_LENGTH` characters (encoded blobs, not words) are dropped, as
Lucene's standard tokenizer drops them. jieba's dictionary is its process-wide default one: words
added with ``jieba.add_word`` change the terms, so add them before indexing and keep them.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any

ANALYZERS = ("english", "chinese", "auto")
DEFAULT_ANALYZER = "english"
MAX_TERM_LENGTH = 255

ENGLISH_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no",
     "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this",
     "to", "was", "will", "with"]
)  # fmt: skip
"""Lucene's English stopword set, the one the BM25 baselines of BEIR (Anserini, Elasticsearch) use."""

Analyzer = Callable[[str], list[str]]

_WORD = re.compile(r"\w+(?:(?:(?<=\d)\.(?=\d)|['’](?=\w))\w+)*")
CJK_RUN = re.compile(  # Chinese and Japanese characters: what jieba segments, and no spaces between words
    "[\u3005\u3007\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+"
)
_jieba_lock = threading.Lock()


def analyzer(name: str) -> Analyzer:
    """The analyzer called ``name``, its libraries imported now (an ImportError names the extra)."""
    if name not in ANALYZERS:
        raise ValueError(f"unknown analyzer {name!r}; choose one of {', '.join(ANALYZERS)}")
    _stemmer()
    if name == "english":
        return english
    _jieba()
    return chinese if name == "chinese" else auto


def english(text: str) -> list[str]:
    """Stemmed word terms of ``text`` without stopwords (the ``english`` analyzer)."""
    return _english_words(_normalize(text))


def chinese(text: str) -> list[str]:
    """Chinese runs as jieba's words and the words inside them, everything else as ``english``."""
    return _segmented(text, search_mode=True)


def auto(text: str) -> list[str]:
    """Chinese runs as jieba's words, everything else as ``english``."""
    return _segmented(text, search_mode=False)


def _segmented(text: str, *, search_mode: bool) -> list[str]:
    normal = _normalize(text)
    tokenizer = _jieba()
    cut = tokenizer.cut_for_search if search_mode else tokenizer.cut
    terms: list[str] = []
    start = 0
    for run in CJK_RUN.finditer(normal):
        terms.extend(_english_words(normal[start : run.start()]))
        terms.extend(word for word in cut(run.group()) if len(word) <= MAX_TERM_LENGTH)
        start = run.end()
    terms.extend(_english_words(normal[start:]))
    return terms


def _normalize(text: str) -> str:
    """One form for what reads the same: full-width letters, ligatures and case folded together."""
    if not isinstance(text, str):
        raise TypeError(f"a text to analyze must be a string, not {type(text).__name__}")
    return unicodedata.normalize("NFKC", text).casefold()


def _english_words(normal: str) -> list[str]:
    words = []
    for match in _WORD.finditer(normal):
        word = match.group()
        if "'" in word or "’" in word:
            word = re.sub(r"['’]s$", "", word).replace("'", "").replace("’", "")
        if word not in ENGLISH_STOPWORDS and len(word) <= MAX_TERM_LENGTH:
            words.append(word)
    return _stemmer().stemWords(words) if words else []


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        import Stemmer
    except ImportError:
        raise ImportError(
            "the lexical analyzers stem English words with PyStemmer: pip install 'qzhou-plugins[lexical]' "
            "(the chroma extra includes it)"
        ) from None
    return Stemmer.Stemmer("english")


def _jieba() -> Any:
    """jieba's default tokenizer, its dictionary loaded once (about a second), quietly."""
    try:
        import jieba
    except ImportError:
        raise ImportError(
            "the 'chinese' and 'auto' analyzers segment Chinese with jieba: "
            "pip install 'qzhou-plugins[chinese]'"
        ) from None
    tokenizer = jieba.dt
    if not tokenizer.initialized:
        with _jieba_lock:
            logging.getLogger("jieba").setLevel(logging.WARNING)  # its "Building prefix dict" lines
            tokenizer.initialize()
    return tokenizer
