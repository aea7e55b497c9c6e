"""Canonical URLs: one spelling per page, so the crawler fetches and stores each page once.

The same page is linked as ``HTTP://Docs.Example.com:443/a/./b/?utm_source=x#top``,
``https://docs.example.com/a/b`` and a dozen other spellings. ``normalize_url`` maps all of them
to one *canonical key* used for de-duplication, scope checks and document identity. It is
deterministic and idempotent (``normalize_url(normalize_url(u)) == normalize_url(u)``), so a key
stored today still matches the same link found next month.

Rules (plain ``urllib.parse``, no dependency, every rule visible here):

* only ``http``/``https`` URLs with a host survive; ``mailto:``, ``javascript:``, ``file:`` ... give None;
* scheme and host are lower-cased, non-ASCII hosts are IDNA-encoded, one trailing dot is dropped;
* user info (``user:pass@``), default ports and the fragment are dropped;
* the path has ``.``/``..`` segments resolved, an empty path becomes ``/``;
* percent-encoding is normalised: hex digits upper-cased, escaped unreserved characters decoded,
  characters that must be escaped (spaces, non-ASCII, ``"<>`` ...) encoded as UTF-8;
* tracking parameters (``utm_*``, ``gclid``, ``fbclid`` ...) are removed and the rest sorted, keeping
  blank values (``a=`` and ``a`` stay distinct); an empty query leaves no ``?``.

Trailing slashes: a non-root path loses its trailing slash (``/docs/`` -> ``/docs``). Servers
nearly always serve both spellings as one page (one redirects to the other), and without this
rule every directory page would be crawled twice. The cost is that the canonical key is an
*identity*, not always the best URL to fetch or to resolve relative links against: the crawler
resolves links against the URL it actually fetched (the response URL) and compares redirect hops
by their raw URLs, so a ``/docs`` -> ``/docs/`` redirect is followed rather than mistaken for a loop.
"""

from __future__ import annotations

import ipaddress
import re
import string
from fnmatch import fnmatchcase
from functools import lru_cache
from urllib.parse import unquote, urljoin, urlsplit

__all__ = ["TRACKING_PARAMS", "fetch_form", "link_target", "normalize_url", "same_host", "url_path_matches"]

DEFAULT_PORTS = {"http": 80, "https": 443}

#: Query parameters that only identify a campaign or a click, never the page (compared case-insensitively).
TRACKING_PARAMS = frozenset(
    {"gclid", "fbclid", "msclkid", "mc_cid", "mc_eid", "_ga", "_hsenc", "_hsmi", "yclid", "igshid", "ref_src"}
)
TRACKING_PREFIXES = ("utm_",)

_HEX = frozenset(string.hexdigits)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# RFC 3986: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; the path adds "/".
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
# Inside one query parameter "&" is the separator and must stay escaped; "=" may appear in a value.
_QUERY_SAFE = _UNRESERVED | frozenset("!$'()*+,;=:@/?")
_HOST_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")
#: per safe set, whether a text has only safe characters and no ``%`` (so it is already normal)
_CLEAN = {
    safe: re.compile("[" + re.escape("".join(sorted(safe - {"%"}))) + "]*").fullmatch
    for safe in (_PATH_SAFE, _QUERY_SAFE)
}


def normalize_url(url: str, base: str | None = None) -> str | None:
    """The canonical form of ``url`` (resolved against ``base``), or None if it is not crawlable."""
    try:
        return _normalize(urljoin(base, url.strip()) if base else url.strip())
    except ValueError:  # malformed netloc, port out of range, undecodable escapes (UnicodeError)
        return None


def fetch_form(url: str, base: str | None = None) -> str | None:
    """The URL to request: the canonical form, but with the trailing slash of a directory path
    kept (``/docs/``), so that the server is asked exactly for what the link meant and relative
    links on the page resolve as a browser would. ``normalize_url`` of it is the page's key."""
    try:
        found = _target(urljoin(base, url.strip()) if base else url.strip())
    except ValueError:
        return None
    return found[0] if found else None


def link_target(href: str, base: str) -> tuple[str, str] | None:
    """``(fetch_form, normalize_url)`` of a link ``href`` found on a page whose base URL is ``base``.

    The crawler's hot path (a documentation page carries hundreds of links, mostly the same
    ones as its neighbours): a relative reference resolves against the base's *directory* only,
    so results are cached per (href, directory) and shared by every page of that directory.
    """
    href = href.strip().partition("#")[0]  # the fragment never reaches the key: most links have one
    if href and not href.startswith("?") and base.count("/") >= 3:
        base = base.partition("#")[0].partition("?")[0]
        base = base[: base.rfind("/") + 1]
    else:
        base = base.partition("#")[0]
    return _link_target(href, base)


@lru_cache(maxsize=65536)
def _link_target(href: str, base: str) -> tuple[str, str] | None:
    try:
        return _target(urljoin(base, href))
    except ValueError:
        return None


def _target(url: str) -> tuple[str, str] | None:
    """(fetch form, key) of an absolute URL; ValueError for a malformed one."""
    key = _normalize(url)
    if key is None:
        return None
    if urlsplit(url).path.endswith("/"):
        parts = urlsplit(key)
        if parts.path != "/":
            return parts._replace(path=parts.path + "/").geturl(), key
    return key, key


def url_path_matches(url: str, patterns: list[str]) -> bool:
    """True if the URL's path matches any glob (``/docs/*``, ``*.pdf``); case-sensitive, ``*`` spans ``/``."""
    path = urlsplit(url).path or "/"
    return any(fnmatchcase(path, pattern) for pattern in patterns)


def same_host(a: str, b: str) -> bool:
    """True if both URLs are crawlable and name the same host (after normalisation; ports ignored)."""
    norm_a, norm_b = normalize_url(a), normalize_url(b)
    if norm_a is None or norm_b is None:
        return False
    return urlsplit(norm_a).hostname == urlsplit(norm_b).hostname


@lru_cache(maxsize=65536)
def _normalize(url: str) -> str | None:
    # cached: a site's pages link to the same URLs over and over (navigation, indexes)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = _normalize_host(parts.hostname)
    if host is None:
        return None
    port = parts.port  # raises ValueError when not a number in 0-65535
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _normalize_path(parts.path)
    query = _normalize_query(parts.query)
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _normalize_host(raw: str) -> str | None:
    """Lower-case, IDNA-encoded, bracketed if IPv6; None if it cannot be a host name."""
    host = unquote(raw, errors="strict").lower()
    if ":" in host:
        return _normalize_ipv6(host)
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return None
    return host


def _normalize_ipv6(host: str) -> str | None:
    if "%" in host:  # zone ids ("fe80::1%eth0") only make sense on the local machine
        return None
    try:
        return f"[{ipaddress.IPv6Address(host).compressed}]"
    except ValueError:
        return None


def _normalize_path(path: str) -> str:
    path = _normalize_percent(path, _PATH_SAFE)
    if not path.startswith("/"):
        path = "/" + path
    path = _remove_dot_segments(path)
    return path.rstrip("/") or "/"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path (the trailing slash is stripped afterwards anyway)."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


def _normalize_query(query: str) -> str:
    params: list[tuple[str, str, str]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        key = _normalize_percent(key, _QUERY_SAFE)
        if _is_tracking(key):
            continue
        params.append((key, sep, _normalize_percent(value, _QUERY_SAFE)))
    return "&".join(key + sep + value for key, sep, value in sorted(params))


def _is_tracking(key: str) -> bool:
    lowered = key.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def _normalize_percent(text: str, safe: frozenset[str]) -> str:
    """Upper-case escapes, decode escaped unreserved characters, escape what must be escaped.

    A ``%`` that does not start a valid escape is itself escaped (``%25``), which keeps the
    function idempotent. ``+`` is left alone: whether it means a space depends on the server.
    """
    if _CLEAN[safe](text):
        return text  # nothing to decode or escape: the common case
    out: list[str] = []
    i = 0
    while i < len(text):
        char, escape = text[i], text[i + 1 : i + 3]
        if char == "%" and len(escape) == 2 and all(digit in _HEX for digit in escape):
            decoded = chr(int(escape, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + escape.upper())
            i += 3
            continue
        out.append(char if char in safe else "".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
        i += 1
    return "".join(out)
