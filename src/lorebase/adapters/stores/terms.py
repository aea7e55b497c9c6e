"""Terms for the stores that rank keywords themselves.

* Qdrant, Chroma (:func:`analyze`, :func:`query_terms`): lower-case ``\\w+`` words, diacritics
  stripped (as FTS5's unicode61), Snowball-stemmed (PostgreSQL's ``english`` stemmer).
* The sqlite store's keyword index in memory (``keyword_cache.py``, :func:`fts5_words`): the terms
  its FTS5 table has (``porter unicode61 remove_diacritics 2``), asked of FTS5 itself word by word.

The stop list is applied to queries only, by every store."""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

import snowballstemmer

from lorebase.db.engine import sqlite_module

#: the sqlite store's FTS5 tokenizer
FTS5_TOKENIZER = "porter unicode61 remove_diacritics 2"

# A short English stop list: dropping these keeps OR-queries fast and BM25 focused.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "might",
        "more",
        "most",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
MAX_QUERY_TERMS = 64
_TOKEN = re.compile(r"\w+", re.UNICODE)
_STEMMERS = threading.local()  # a Snowball stemmer is not thread-safe: one per thread


_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits; FTS5 may cut a word further
#: distinct words whose FTS5 terms a process remembers (cleared when full)
MAX_REMEMBERED_WORDS = 1_000_000


class _Fts5Terms:
    """Words → the terms FTS5's ``porter unicode61 remove_diacritics 2`` tokenizer makes of them,
    asked of FTS5 itself (a private in-memory table), so the index in memory and the FTS5 table
    can never disagree on a stem. Each distinct word is asked once per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, ...]] = {}
        self._conn: Any = None

    def _connect(self) -> Any:
        conn = sqlite_module().connect(":memory:", check_same_thread=False)
        conn.execute(f"CREATE VIRTUAL TABLE words USING fts5(word, tokenize='{FTS5_TOKENIZER}')")
        conn.execute("CREATE VIRTUAL TABLE words_terms USING fts5vocab(words, 'instance')")
        return conn

    def of(self, words: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Each word's terms (most words: one; a word FTS5 cuts: several; none: empty)."""
        known = self._known
        out: dict[str, tuple[str, ...]] = {}
        missing: set[str] = set()
        for w in words:
            terms = known.get(w)
            if terms is None:
                missing.add(w)
            else:
                out[w] = terms
        if missing:
            with self._lock:
                if len(known) + len(missing) > MAX_REMEMBERED_WORDS:
                    known.clear()
                out.update(self._ask(sorted(missing)))
        return out

    def _ask(self, words: list[str]) -> dict[str, tuple[str, ...]]:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        out: dict[str, tuple[str, ...]] = {}
        for i in range(0, len(words), 10_000):
            part = words[i : i + 10_000]
            with conn:
                conn.execute("DELETE FROM words")
                conn.executemany("INSERT INTO words(rowid, word) VALUES (?, ?)", enumerate(part))
                found: dict[int, list[tuple[int, str]]] = {}
                for term, doc, offset in conn.execute("SELECT term, doc, offset FROM words_terms"):
                    found.setdefault(doc, []).append((offset, term))
            for j, w in enumerate(part):
                out[w] = tuple(term for _, term in sorted(found.get(j, ())))
        self._known.update(out)
        return out


FTS5_TERMS = _Fts5Terms()


def fts5_words(text: str) -> list[str]:
    """A text's words (lower-case runs of letters and digits): what FTS5's unicode61 tokenizer
    cuts, or coarser; ``FTS5_TERMS.of`` gives each word's terms exactly."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)  # a decomposed accent stays inside its word
    return _WORD.findall(text.lower())


def fts5_query_terms(query: str) -> list[str]:
    """Free text → the distinct terms an FTS5 OR-query of it (``sqlite.fts_query``) asks for:
    stop words dropped unless nothing else is left, at most 64."""
    words = fts5_words(query)
    kept = [w for w in words if w not in STOP_WORDS] or words
    terms = FTS5_TERMS.of(kept)
    return list(dict.fromkeys(t for w in kept for t in terms[w]))[:MAX_QUERY_TERMS]


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
    kept = [w for w in words if w not in STOP_WORDS] or words
    return list(dict.fromkeys(_stem(kept)))[:MAX_QUERY_TERMS]
