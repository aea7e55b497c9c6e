"""The crawler's reading of pages and sites: links, canonical, meta robots, robots.txt, sitemaps."""

from __future__ import annotations

import gzip

import pytest

from lorebase.crawl.links import looks_like_document, page_links
from lorebase.crawl.options import parse_options
from lorebase.crawl.robots import parse_sitemap, robots_from_response
from lorebase.errors import InvalidInput

BASE = "https://docs.example.com/guide/intro.html"


def test_links_are_absolute_normalised_deduplicated_and_in_document_order() -> None:
    html = b"""<html><head><link rel="canonical" href="/guide/intro.html?utm_source=x"></head><body>
    <a href="setup.html#install">Setup</a> <a href="./setup.html">again</a>
    <a href="../api/">API</a> <a href="https://Other.example.com:443/x">other host</a>
    <a href="mailto:a@b.c">mail</a> <a href="javascript:void(0)">js</a> <a>no href</a>
    <a href="ads.html" rel="sponsored nofollow">ad</a> <area href="map.html"></body></html>"""
    found = page_links(html, BASE)
    assert found.links == [
        "https://docs.example.com/guide/setup.html",
        "https://docs.example.com/api/",  # the fetch form keeps a directory's slash
        "https://other.example.com/x",
        "https://docs.example.com/guide/map.html",
    ]
    assert found.canonical == "https://docs.example.com/guide/intro.html"
    assert not found.noindex and not found.nofollow


def test_base_href_and_meta_robots_are_honoured() -> None:
    html = b"""<html><head><base href="https://docs.example.com/v2/">
    <meta name="robots" content="noindex, nofollow"></head><body><a href="a.html">a</a></body></html>"""
    found = page_links(html, BASE)
    assert found.noindex and found.nofollow and found.links == []
    found = page_links(b'<base href="/v2/"><a href="a.html">a</a>', BASE)
    assert found.links == ["https://docs.example.com/v2/a.html"]


def test_unparseable_or_empty_pages_give_no_links() -> None:
    assert page_links(b"", BASE).links == []
    assert page_links(b"\x00\x01\x02", BASE).links == []


@pytest.mark.parametrize(
    ("url", "fetch"),
    [
        ("https://x.org/docs/", True),
        ("https://x.org/docs/page", True),
        ("https://x.org/page.html", True),
        ("https://x.org/index.php?id=3", True),
        ("https://x.org/v1.2", True),
        ("https://x.org/manual.pdf", True),
        ("https://x.org/letter.DOCX", True),
        ("https://x.org/logo.png", False),
        ("https://x.org/site.css", False),
        ("https://x.org/app.js", False),
        ("https://x.org/source.tar.gz", False),
        ("https://x.org/example.py", False),
        ("https://x.org/video.mp4", False),
    ],
)
def test_only_pages_and_pdf_docx_files_are_worth_fetching(url: str, fetch: bool) -> None:
    assert looks_like_document(url) is fetch


def test_robots_rules_crawl_delay_and_sitemaps() -> None:
    body = b"""User-agent: *
Disallow: /private/
Crawl-delay: 2.5

User-agent: lorebase
Disallow: /drafts/
Allow: /drafts/public/
Crawl-delay: 1

Sitemap: https://docs.example.com/sitemap-index.xml
"""
    robots = robots_from_response(200, body)
    assert not robots.allows("https://docs.example.com/drafts/x.html")  # our own group applies
    assert robots.allows("https://docs.example.com/drafts/public/y.html")
    assert robots.allows("https://docs.example.com/private/z.html")  # only the * group says so
    assert robots.crawl_delay == 1.0
    assert robots.sitemaps == ["https://docs.example.com/sitemap-index.xml"]


def test_robots_missing_allows_all_and_unreachable_disallows_all() -> None:
    assert robots_from_response(404, b"").allows("https://x.org/anything")
    down = robots_from_response(503, None)
    assert not down.allows("https://x.org/anything") and "RFC 9309" in (down.reason or "")
    assert not robots_from_response(None, None).allows("https://x.org/")


def test_sitemaps_urlsets_indexes_gzip_and_hostile_xml() -> None:
    urlset = b"""<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
    <url><loc>https://x.org/a.html</loc></url><url><loc> https://x.org/b/?utm_medium=m </loc></url>
    <url><loc>ftp://x.org/c</loc></url></urlset>"""
    assert parse_sitemap(urlset, "https://x.org/sitemap.xml").urls == [
        "https://x.org/a.html",
        "https://x.org/b/",
    ]
    index = b"""<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
    <sitemap><loc>https://x.org/s1.xml</loc></sitemap></sitemapindex>"""
    found = parse_sitemap(gzip.compress(index), "https://x.org/sitemap.xml.gz")
    assert found.sitemaps == ["https://x.org/s1.xml"] and found.urls == []
    laughs = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
    <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
    <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
    <urlset><url><loc>https://x.org/&lol3;</loc></url></urlset>"""
    assert all(
        len(u) < 200 for u in parse_sitemap(laughs, "https://x.org/s.xml").urls
    )  # entities not expanded
    assert parse_sitemap(b"not xml at all", "https://x.org/s.xml").urls == []


def test_crawl_options_defaults_and_clear_errors() -> None:
    opts = parse_options(None)
    assert (opts.max_pages, opts.max_depth, opts.concurrency, opts.engine) == (100, 3, 4, "builtin")
    with pytest.raises(InvalidInput, match=r"crawl\.concurrency"):
        parse_options({"concurrency": 0})
    with pytest.raises(InvalidInput, match=r"crawl\.engine"):
        parse_options({"engine": "selenium"})


def test_a_directory_page_resolves_its_relative_links_under_itself() -> None:
    """The page key drops the trailing slash, the fetch form keeps it: links resolve correctly
    even on a server that answers ``/guide/`` without redirecting."""
    found = page_links(b'<a href="intro.html">intro</a>', "https://x.org/guide/")
    assert found.links == ["https://x.org/guide/intro.html"]
