"""Canonical URL rules, one table per rule, plus idempotence over every case."""

from __future__ import annotations

import pytest

from lorebase.crawl.urls import normalize_url, same_host, url_path_matches

CASES: list[tuple[str, str | None, str | None]] = [
    # (url, base, expected)
    # --- schemes: only http(s) with a host
    ("http://example.com/", None, "http://example.com/"),
    ("https://example.com/", None, "https://example.com/"),
    ("mailto:someone@example.com", None, None),
    ("javascript:alert(1)", None, None),
    ("file:///etc/passwd", None, None),
    ("data:text/html,<b>x</b>", None, None),
    ("ftp://example.com/file", None, None),
    ("tel:+123456", None, None),
    ("http:///no-host", None, None),
    ("http://", None, None),
    ("//example.com/x", None, None),
    ("relative/path", None, None),
    ("", None, None),
    # --- relative to a base
    ("../c?x=1#f", "http://example.com/a/b/", "http://example.com/a/c?x=1"),
    ("c", "http://example.com/a/b", "http://example.com/a/c"),
    ("/root", "https://example.com/a/b", "https://example.com/root"),
    ("//cdn.example.com/x", "https://example.com/", "https://cdn.example.com/x"),
    ("?page=2", "http://example.com/list", "http://example.com/list?page=2"),
    ("#top", "http://example.com/a", "http://example.com/a"),
    ("", "http://example.com/a", "http://example.com/a"),
    ("https://other.example/", "http://example.com/a", "https://other.example/"),
    ("javascript:void(0)", "http://example.com/", None),
    ("mailto:x@example.com", "http://example.com/", None),
    # --- scheme and host case, IDNA, trailing dot
    ("HTTP://Example.COM/Path", None, "http://example.com/Path"),
    ("https://BÜCHER.example/", None, "https://xn--bcher-kva.example/"),
    ("https://xn--bcher-kva.example/", None, "https://xn--bcher-kva.example/"),
    ("https://例え.テスト/", None, "https://xn--r8jz45g.xn--zckzah/"),
    ("http://example.com./a", None, "http://example.com/a"),
    ("http://a..example.com/", None, None),
    ("http://exa mple.com/", None, None),
    ("http://" + "a" * 64 + ".com/", None, None),
    ("http://[::1]/", None, "http://[::1]/"),
    ("http://[2001:DB8:0:0::1]:8080/", None, "http://[2001:db8::1]:8080/"),
    ("http://[not-ipv6]/", None, None),
    ("http://[fe80::1%25eth0]/", None, None),
    # --- user info
    ("http://user:pass@example.com/", None, "http://example.com/"),
    ("http://user@example.com:8080/", None, "http://example.com:8080/"),
    # --- ports
    ("http://example.com:80/", None, "http://example.com/"),
    ("https://example.com:443/", None, "https://example.com/"),
    ("http://example.com:443/", None, "http://example.com:443/"),
    ("https://example.com:80/", None, "https://example.com:80/"),
    ("http://example.com:8080/", None, "http://example.com:8080/"),
    ("http://example.com:0080/", None, "http://example.com/"),
    ("http://example.com:/", None, "http://example.com/"),
    ("http://example.com:99999/", None, None),
    ("http://example.com:http/", None, None),
    # --- fragment
    ("http://example.com/a#section", None, "http://example.com/a"),
    ("http://example.com/a?b=1#section", None, "http://example.com/a?b=1"),
    # --- empty path, dot segments, trailing slash
    ("http://example.com", None, "http://example.com/"),
    ("http://example.com?a=1", None, "http://example.com/?a=1"),
    ("http://example.com/a/./b", None, "http://example.com/a/b"),
    ("http://example.com/a/b/../c", None, "http://example.com/a/c"),
    ("http://example.com/../../a", None, "http://example.com/a"),
    ("http://example.com/a/..", None, "http://example.com/"),
    ("http://example.com/a/%2E%2E/b", None, "http://example.com/b"),
    ("http://example.com/a/%2e/b", None, "http://example.com/a/b"),
    ("http://example.com/docs/", None, "http://example.com/docs"),
    ("http://example.com/docs//", None, "http://example.com/docs"),
    ("http://example.com/", None, "http://example.com/"),
    ("http://example.com/a//b", None, "http://example.com/a//b"),
    # --- percent-encoding
    ("http://example.com/a%2fb", None, "http://example.com/a%2Fb"),
    ("http://example.com/%7Euser", None, "http://example.com/~user"),
    ("http://example.com/%41%62%2D%5F", None, "http://example.com/Ab-_"),
    ("http://example.com/a b", None, "http://example.com/a%20b"),
    ("http://example.com/a%20b", None, "http://example.com/a%20b"),
    ("http://example.com/café", None, "http://example.com/caf%C3%A9"),
    ("http://example.com/caf%c3%a9", None, "http://example.com/caf%C3%A9"),
    ('http://example.com/"<>^`{|}', None, "http://example.com/%22%3C%3E%5E%60%7B%7C%7D"),
    ("http://example.com/100%", None, "http://example.com/100%25"),
    ("http://example.com/%zz", None, "http://example.com/%25zz"),
    ("http://example.com/a;b=c:d@e!$&'()*+,", None, "http://example.com/a;b=c:d@e!$&'()*+,"),
    ("http://ex%61mple.com/", None, "http://example.com/"),
    ("http://example.com/?q=a b&r=%e2%82%ac", None, "http://example.com/?q=a%20b&r=%E2%82%AC"),
    ("http://example.com/?q=a+b", None, "http://example.com/?q=a+b"),
    ("http://example.com/?q=%26%3D", None, "http://example.com/?q=%26%3D"),
    ("http://example.com/?url=http://x/?y", None, "http://example.com/?url=http://x/?y"),
    # --- tracking parameters, sorting, blank values, trailing "?"
    ("http://example.com/?utm_source=x&utm_medium=y&utm_whatever=z", None, "http://example.com/"),
    ("http://example.com/?UTM_Source=x&id=1", None, "http://example.com/?id=1"),
    ("http://example.com/?utm%5Fsource=x&id=1", None, "http://example.com/?id=1"),
    (
        "http://example.com/?gclid=1&fbclid=2&msclkid=3&mc_cid=4&mc_eid=5&_ga=6&_hsenc=7&_hsmi=8"
        "&yclid=9&igshid=10&ref_src=11&keep=1",
        None,
        "http://example.com/?keep=1",
    ),
    ("http://example.com/?utm=1&source=2", None, "http://example.com/?source=2&utm=1"),
    ("http://example.com/?b=2&a=1&c=3", None, "http://example.com/?a=1&b=2&c=3"),
    ("http://example.com/?a=2&a=1", None, "http://example.com/?a=1&a=2"),
    ("http://example.com/?b=&a", None, "http://example.com/?a&b="),
    ("http://example.com/?a&a=", None, "http://example.com/?a&a="),
    ("http://example.com/?r=a=b", None, "http://example.com/?r=a=b"),
    ("http://example.com/?&&a=1&&", None, "http://example.com/?a=1"),
    ("http://example.com/a?", None, "http://example.com/a"),
    ("http://example.com/a?#frag", None, "http://example.com/a"),
    # --- whitespace around the input
    ("  http://example.com/a \n", None, "http://example.com/a"),
    # --- everything at once
    (
        "HTTP://User:Pw@Docs.Example.COM:80/a/./b/../c/?utm_source=x&z=1&a=%7e#top",
        None,
        "http://docs.example.com/a/c?a=~&z=1",
    ),
]


@pytest.mark.parametrize(("url", "base", "expected"), CASES)
def test_normalize_url(url: str, base: str | None, expected: str | None) -> None:
    assert normalize_url(url, base) == expected


@pytest.mark.parametrize(("url", "base", "expected"), [case for case in CASES if case[2] is not None])
def test_normalize_url_is_idempotent(url: str, base: str | None, expected: str) -> None:
    once = normalize_url(url, base)
    assert once is not None
    assert normalize_url(once) == once
    assert normalize_url(once, "http://unrelated.example/x/y") == once


@pytest.mark.parametrize(
    ("url", "patterns", "expected"),
    [
        ("http://example.com/docs/a", ["/docs/*"], True),
        ("http://example.com/docs/a/b", ["/docs/*"], True),
        ("http://example.com/docs", ["/docs/*"], False),
        ("http://example.com/blog/a", ["/docs/*"], False),
        ("http://example.com/files/a.pdf", ["*.pdf"], True),
        ("http://example.com/files/a.PDF", ["*.pdf"], False),
        ("http://example.com/Docs/a", ["/docs/*"], False),
        ("http://example.com/a.pdf?x=1", ["*.pdf"], True),
        ("http://example.com/a", ["/blog/*", "/a"], True),
        ("http://example.com/a", [], False),
        ("http://example.com", ["/"], True),
        ("http://example.com/v1/api", ["/v[0-9]/*"], True),
    ],
)
def test_url_path_matches(url: str, patterns: list[str], expected: bool) -> None:
    assert url_path_matches(url, patterns) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("http://example.com/a", "https://example.com/b", True),
        ("http://Example.COM/a", "http://example.com./b", True),
        ("http://example.com:8080/", "http://example.com/", True),
        ("http://user@example.com/", "http://example.com/", True),
        ("https://bücher.example/", "https://xn--bcher-kva.example/", True),
        ("http://www.example.com/", "http://example.com/", False),
        ("http://a.example.com/", "http://b.example.com/", False),
        ("mailto:x@example.com", "http://example.com/", False),
        ("http://example.com/", "not a url", False),
    ],
)
def test_same_host(a: str, b: str, expected: bool) -> None:
    assert same_host(a, b) is expected
