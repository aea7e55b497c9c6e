"""What a fetched HTML page tells the crawler: its links, its canonical URL, its meta robots.

Only the crawler's needs: content extraction happens later in the ``process_document`` job with
the HTML parser, so this pass is a cheap lxml parse that reads ``<a href>``, ``<base>``,
``<link rel=canonical>`` and ``<meta name=robots>``.
"""

from __future__ import annotations

import mimetypes
import posixpath
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit

from lxml import etree

from lorebase.adapters.parsers.html_dom import parse_dom

from .urls import fetch_form, link_target

#: what the crawler turns into documents; anything else it meets is skipped
PAGE_TYPES = ("text/html", "application/xhtml+xml")
FILE_TYPES = (
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
)
DOCUMENT_TYPES = PAGE_TYPES + FILE_TYPES


#: extensions ``mimetypes`` may not know that are certainly not pages
_BINARY_EXTENSIONS = frozenset(
    [
        ".zip",
        ".tar",
        ".tgz",
        ".gz",
        ".bz2",
        ".xz",
        ".zst",
        ".7z",
        ".rar",
        ".exe",
        ".dmg",
        ".iso",
        ".img",
        ".whl",
        ".jar",
        ".bin",
        ".msi",
        ".deb",
        ".rpm",
        ".apk",
    ]
)


@dataclass(slots=True)
class PageLinks:
    links: list[str] = field(default_factory=list)
    canonical: str | None = None
    noindex: bool = False
    nofollow: bool = False


def looks_like_document(url: str) -> bool:
    """Worth fetching: an extension-less path or one whose type is a page, PDF or DOCX.

    Images, stylesheets, scripts, archives, source files and the like are never requested.
    """
    path = urlsplit(url).path
    ext = posixpath.splitext(path)[1].lower()
    if not ext or ext in (".html", ".htm", ".xhtml", ".php", ".asp", ".aspx", ".jsp", ".cgi"):
        return True
    if ext in _BINARY_EXTENSIONS:
        return False
    guessed, encoding = mimetypes.guess_type(f"x{ext}", strict=False)
    if encoding is not None:
        return False  # .gz, .bz2, .xz: compressed files, not pages
    if guessed is None:
        return True  # unknown extensions (``/v1.2``, ``/page.en``) are usually pages
    return guessed in DOCUMENT_TYPES


def page_links(body: bytes, url: str) -> PageLinks:
    """Links and the canonical URL (absolute, in their fetch form: see ``fetch_form``; each page
    once, in document order) and the robots meta."""
    out = PageLinks()
    try:
        root = parse_dom(body)
    except (etree.ParserError, ValueError):
        return out
    base = url
    for el in root.iter("base"):
        href = el.get("href")
        if href:  # resolved, not normalised: the trailing slash of a directory base matters
            base = urldefrag(urljoin(url, href.strip()))[0]
        break
    for el in root.iter("meta"):
        if (el.get("name") or "").lower() in ("robots", "lorebase"):
            content = (el.get("content") or "").lower()
            out.noindex = out.noindex or "noindex" in content or "none" in content
            out.nofollow = out.nofollow or "nofollow" in content or "none" in content
    for el in root.iter("link"):
        if "canonical" in (el.get("rel") or "").lower().split() and el.get("href"):
            out.canonical = fetch_form(el.get("href") or "", base)
            break
    if out.nofollow:
        return out
    seen: set[str] = set()
    hrefs: set[str] = set()
    for el in root.iter("a", "area"):
        href = (el.get("href") or "").strip()
        if not href or href.startswith("#") or href in hrefs:
            continue  # same-page anchors and repeated links (a page repeats most of its links)
        if "nofollow" in (el.get("rel") or "").lower().split():
            continue
        hrefs.add(href)
        target = link_target(href, base)
        if target is not None and target[1] not in seen:
            seen.add(target[1])
            out.links.append(target[0])
    return out
