"""robots.txt (RFC 9309, parsed by protego) and sitemaps, as the crawler needs them.

RFC 9309 on errors: a missing robots.txt (4xx) allows everything; an unreachable one (5xx,
network error) means "assume complete disallow" until it can be read. Sitemaps are parsed with
an XML parser that resolves no entities and reaches no network, and are capped in size.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field

from lxml import etree
from protego import Protego

from .urls import fetch_form

#: the product token that robots.txt groups name (``User-agent: lorebase``)
ROBOTS_TOKEN = "lorebase"
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps.org limit (uncompressed)
MAX_SITEMAP_URLS = 50_000


@dataclass(slots=True)
class Robots:
    """The rules for one origin. ``parser`` None with ``disallow_all`` False means "no rules"."""

    parser: Protego | None = None
    disallow_all: bool = False
    reason: str | None = None

    def allows(self, url: str) -> bool:
        if self.disallow_all:
            return False
        return self.parser is None or bool(self.parser.can_fetch(url, ROBOTS_TOKEN))

    @property
    def crawl_delay(self) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(ROBOTS_TOKEN)
        return float(delay) if delay is not None else None

    @property
    def sitemaps(self) -> list[str]:
        return list(self.parser.sitemaps) if self.parser is not None else []


def robots_from_response(status: int | None, body: bytes | None) -> Robots:
    if status is not None and 200 <= status < 300 and body is not None:
        return Robots(parser=Protego.parse(body.decode("utf-8", errors="replace")))
    if status is not None and 400 <= status < 500:
        return Robots()  # no robots.txt: everything allowed
    return Robots(
        disallow_all=True,
        reason=f"robots.txt unreachable ({'HTTP ' + str(status) if status else 'no response'}); "
        "RFC 9309 says to crawl nothing until it can be read",
    )


@dataclass(slots=True)
class Sitemap:
    urls: list[str] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)  # a sitemap index points at more sitemaps


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=True)


def parse_sitemap(body: bytes, url: str) -> Sitemap:
    """URLs of a ``<urlset>`` or the child sitemaps of a ``<sitemapindex>`` (gzip accepted)."""
    if body[:2] == b"\x1f\x8b":
        try:
            body = _gunzip_capped(body)
        except (OSError, EOFError, zlib.error):
            return Sitemap()
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        return Sitemap()
    if root is None:
        return Sitemap()
    out = Sitemap()
    kind = etree.QName(root).localname
    for loc in root.iter("{*}loc"):
        found = fetch_form((loc.text or "").strip(), url)
        if not found:
            continue
        (out.sitemaps if kind == "sitemapindex" else out.urls).append(found)
        if len(out.urls) + len(out.sitemaps) >= MAX_SITEMAP_URLS:
            break
    return out


def _gunzip_capped(body: bytes) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
        data = f.read(MAX_SITEMAP_BYTES + 1)
    if len(data) > MAX_SITEMAP_BYTES:
        raise OSError("sitemap larger than 50 MB uncompressed")
    return data
