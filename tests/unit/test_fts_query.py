"""``fts_query``: free text -> a safe FTS5 OR-query of quoted, de-duplicated, non-stop-word terms."""

from __future__ import annotations

import random
import re
import sqlite3
import string
from collections.abc import Iterator

import pytest

from lorebase.adapters.stores.sqlite import fts_query

#: what every non-empty output must look like: quoted terms joined by OR, nothing else
SHAPE = re.compile(r'^"[^"]+"( OR "[^"]+")*$')


def terms(match: str) -> list[str]:
    return re.findall(r'"([^"]+)"', match)


def test_terms_are_lowercased_quoted_and_joined_with_or() -> None:
    assert fts_query("Photosynthesis Chlorophyll") == '"photosynthesis" OR "chlorophyll"'


def test_single_term() -> None:
    assert fts_query("river") == '"river"'


def test_stop_words_are_dropped() -> None:
    assert fts_query("What is the capital of France?") == '"capital" OR "france"'
    assert fts_query("How do I reset my password") == '"reset" OR "my" OR "password"'


def test_duplicate_terms_are_kept_once_in_first_seen_order() -> None:
    assert fts_query("River banks river RIVER Banks delta") == '"river" OR "banks" OR "delta"'


def test_query_of_stop_words_only_searches_the_stop_words() -> None:
    assert fts_query("The Who") == '"the" OR "who"'
    assert fts_query("to be or not to be") == '"to" OR "be" OR "or" OR "not"'


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "?!", "...", '"', "*", "-", ":", "()", "^+{}"])
def test_query_without_words_gives_empty_match(query: str) -> None:
    assert fts_query(query) == ""


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"quoted phrase"', ["quoted", "phrase"]),
        ('a"b', ["b"]),
        ("wild*", ["wild"]),
        ("cats AND dogs", ["cats", "dogs"]),
        ("cats OR dogs", ["cats", "dogs"]),
        ("cats NOT dogs", ["cats", "dogs"]),
        ("NEAR(cats dogs, 3)", ["near", "cats", "dogs", "3"]),
        ("-excluded", ["excluded"]),
        ("title:secret", ["title", "secret"]),
        ("{content title}: x", ["content", "title", "x"]),
        ("^start", ["start"]),
        ("x + y", ["x", "y"]),
    ],
)
def test_fts_syntax_never_leaks_through(query: str, expected: list[str]) -> None:
    match = fts_query(query)
    assert SHAPE.match(match), match
    assert terms(match) == expected


def test_words_keep_digits_underscores_and_non_ascii_letters() -> None:
    assert terms(fts_query("COVID-19 sqlite_vec Café naïve Über 東京")) == [
        "covid",
        "19",
        "sqlite_vec",
        "café",
        "naïve",
        "über",
        "東京",
    ]


def test_at_most_64_terms_are_kept_in_order() -> None:
    words = [f"term{i}" for i in range(100)]
    result = terms(fts_query(" ".join(words)))
    assert result == words[:64]


def test_cap_counts_distinct_terms_not_repetitions() -> None:
    words = ["repeat"] * 200 + ["last"]
    assert fts_query(" ".join(words)) == '"repeat" OR "last"'


@pytest.fixture(scope="module")
def fts5() -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(":memory:")
    try:
        con.execute(
            "CREATE VIRTUAL TABLE t USING fts5(content, tokenize='porter unicode61 remove_diacritics 2')"
        )
    except sqlite3.OperationalError:  # pragma: no cover - depends on the build
        pytest.skip("this sqlite3 build has no FTS5")
    con.execute("INSERT INTO t(content) VALUES ('the quick brown fox'), ('near and far'), ('café 東京 19')")
    yield con
    con.close()


def test_random_junk_always_yields_a_valid_fts5_query(fts5: sqlite3.Connection) -> None:
    rng = random.Random(1337)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " \t\n" + "éü東京_"
    queries = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)]
    queries += ['NEAR("a" "b")', "a AND OR NOT b", '""""', "* * *", "col:", "-(-)", "fox*", "_", "__init__"]
    for q in queries:
        match = fts_query(q)
        if not match:
            continue
        assert SHAPE.match(match), (q, match)
        fts5.execute("SELECT rowid FROM t WHERE t MATCH ?", (match,)).fetchall()  # must not raise


def test_output_finds_what_the_words_mean(fts5: sqlite3.Connection) -> None:
    def search(q: str) -> list[int]:
        return [r[0] for r in fts5.execute("SELECT rowid FROM t WHERE t MATCH ?", (fts_query(q),))]

    assert search("Foxes?") == [1]  # porter stemming still applies inside quotes
    assert search("NEAR(") == [2]  # the operator word is searched as a word
    assert search("cafe") == [3]
    assert search("the") == [1]  # a stop-word-only query still searches
