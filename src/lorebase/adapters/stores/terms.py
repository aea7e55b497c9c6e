"""Terms for the stores that rank keywords themselves (Qdrant, Chroma): lower-case ``\\w+`` words,
diacritics stripped (as FTS5's unicode61), Snowball-stemmed (PostgreSQL's ``english`` stemmer),
with the SQLite store's stop list applied to queries only."""

from __future__ import annotations

import re
import threading
import unicodedata

import snowballstemmer

from lorebase.adapters.stores.sqlite import _STOP

MAX_QUERY_TERMS = 64
_TOKEN = re.compile(r"\w+", re.UNICODE)
_STEMMERS = threading.local()  # a Snowball stemmer is not thread-safe: one per thread


def _words(text: str) -> list[str]:
    """Lower-case ``\\w+`` words, diacritics stripped (``café`` → ``cafe``, as FTS5's unicode61)."""
    text = text.lower()
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _TOKEN.findall(text)


def _stem(words: list[str]) -> list[str]:
    stemmer = getattr(_STEMMERS, "english", None)
    if stemmer is None:
        stemmer = _STEMMERS.english = snowballstemmer.stemmer("english")
    return list(stemmer.stemWords(words))


def analyze(text: str) -> list[str]:
    """A text's terms, in order: stemmed words, stop words included (queries decide about them)."""
    return _stem(_words(text))


def query_terms(query: str) -> list[str]:
    """Free text → distinct terms (at most 64); any syntax is punctuation and dropped.

    Stop words are dropped unless the query has nothing else, as in the SQLite store."""
    words = _words(query)
    kept = [w for w in words if w not in _STOP] or words
    return list(dict.fromkeys(_stem(kept)))[:MAX_QUERY_TERMS]
