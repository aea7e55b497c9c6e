"""A small synchronous client for Firecrawl's crawl API (v1), for sites that need JavaScript.

Why our own client rather than ``firecrawl-py``: the crawl job needs exactly three calls (start,
read status pages, cancel), its errors mapped onto lorebase's ``TransientError`` /
``PermanentError`` so the job runner retries or fails correctly, and one security rule the SDK
does not enforce: the API key is only ever sent to the configured Firecrawl origin.

Protocol notes the crawl job must know (checked against Firecrawl's v1 status controller):

* ``GET /v1/crawl/{id}`` returns the pages scraped *so far*, from the start, cut into pages of
  roughly 10 MiB; ``next`` points at the following page (same id, ``skip`` query parameter).
* While the crawl is ``scraping``, ``next`` is present even when no further data exists yet, so
  following ``next`` only terminates once the status is final. Poll without ``next_url`` until
  the status is ``completed`` (or ``cancelled``), then follow ``next`` until it is absent.
* Firecrawl builds ``next`` with ``https`` unless the server runs with ``ENV=local``, so a
  self-hosted instance served over plain ``http`` hands out ``https`` next URLs. A next URL on
  the configured host is therefore followed on the configured scheme and port; one on another
  host is refused (a ``PermanentError`` naming both), since the request would carry the key.

Handlers run in worker threads, hence ``httpx.Client`` rather than an async client.
"""

from __future__ import annotations

import email.utils
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from lorebase.errors import PermanentError, TransientError

#: default ports, so that ``https://h`` and ``https://h:443`` count as the same origin
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: characters that are special in a JavaScript (and Python) regular expression outside a class
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}")
#: how much of an error body ends up in an exception message
_ERROR_TEXT_LIMIT = 300


@dataclass(slots=True)
class FirecrawlPage:
    """One scraped page: ``url`` is ``metadata.sourceURL`` (the URL asked for) or ``metadata.url``."""

    url: str
    markdown: str
    title: str | None
    status_code: int | None
    error: str | None
    metadata: dict[str, Any]


@dataclass(slots=True)
class FirecrawlBatch:
    """One answer of the status endpoint: the crawl's progress and one page of its results."""

    status: str
    total: int
    completed: int
    pages: list[FirecrawlPage]
    next: str | None


def glob_to_firecrawl_regex(glob: str) -> str:
    """Translate one of our URL path globs (``/docs/*``) into the regex Firecrawl expects.

    Same semantics as ``fnmatch.fnmatchcase`` (``*`` matches anything including ``/``, ``?`` one
    character, ``[...]`` / ``[!...]`` classes), anchored at both ends. ``fnmatch.translate``
    itself cannot be used: Firecrawl runs ``new RegExp(pattern).test(pathname)`` in JavaScript,
    where its ``(?s:...)`` group is a syntax error and ``\\Z`` matches a literal ``Z``. The output
    here uses only syntax that JavaScript and Python read the same way.
    """
    out = ["^"]
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        i += 1
        if char == "*":
            while i < n and glob[i] == "*":
                i += 1
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = _class_end(glob, i)
            if end is None:
                out.append("\\[")
            else:
                out.append(_char_class(glob[i:end]))
                i = end + 1
        else:
            out.append("\\" + char if char in _REGEX_SPECIAL else char)
    out.append("$")
    return "".join(out)


def _class_end(glob: str, start: int) -> int | None:
    """Index of the ``]`` closing a class opened just before ``start`` (fnmatch's rules), if any."""
    j = start
    if j < len(glob) and glob[j] == "!":
        j += 1
    if j < len(glob) and glob[j] == "]":
        j += 1
    while j < len(glob) and glob[j] != "]":
        j += 1
    return j if j < len(glob) else None


def _char_class(body: str) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    escaped = "".join("\\" + c if c in "\\]^[" else c for c in body)
    return f"[{'^' if negate else ''}{escaped}]"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_page(item: Any) -> FirecrawlPage | None:
    """One ``data`` entry; None for an entry with no URL at all (it could not be stored anyway)."""
    if not isinstance(item, dict):
        raise PermanentError("Firecrawl returned a crawl result that is not an object")
    metadata = item.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    url = _opt_str(metadata.get("sourceURL")) or _opt_str(metadata.get("url"))
    if url is None:
        return None
    status_code = metadata.get("statusCode")
    markdown = item.get("markdown")
    return FirecrawlPage(
        url=url,
        markdown=markdown if isinstance(markdown, str) else "",
        title=_opt_str(metadata.get("title")),
        status_code=status_code
        if isinstance(status_code, int) and not isinstance(status_code, bool)
        else None,
        error=_opt_str(metadata.get("error")),
        metadata=metadata,
    )


class FirecrawlClient:
    """Start, read and cancel Firecrawl crawls; every failure is a Transient- or PermanentError.

    ``base_url`` is the API root without the version (``https://api.firecrawl.dev``, or a
    self-hosted ``http://firecrawl:3002``); ``api_key`` may be None for a self-hosted instance
    without authentication. Redirects are not followed, so the key never leaves that origin.

    Error mapping: network errors, timeouts, 408, 429 and 5xx are transient (``retry_after`` from
    ``Retry-After`` when given); 401/403 (key rejected), 402 (out of credits) and every other 4xx
    are permanent, as are a ``failed`` crawl and an answer whose JSON has the wrong shape (a
    protocol mismatch, e.g. a wrong base URL, does not fix itself). A 2xx body that is not JSON
    at all is transient: it is a truncated transfer or a proxy's page, and the job runner's
    attempt limit still ends a persistent one.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = httpx.URL(base_url.rstrip("/"))
        if base.scheme not in _DEFAULT_PORTS or not base.host:
            raise PermanentError(f"Firecrawl base URL must be an http(s) URL, not {base_url!r}")
        self._base = base
        self._api_key = api_key or None
        self._timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "lorebase"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False
        )

    # -- public API ------------------------------------------------------------------------------

    def start_crawl(
        self, url: str, *, limit: int, max_depth: int, include: list[str], exclude: list[str]
    ) -> str:
        """Start a crawl of ``url`` and return its id.

        ``include`` / ``exclude`` are our URL path globs; Firecrawl wants regexes over the URL
        path, so each glob goes through :func:`glob_to_firecrawl_regex` (fnmatch semantics).
        """
        body = {
            "url": url,
            "limit": limit,
            "maxDepth": max_depth,
            "includePaths": [glob_to_firecrawl_regex(g) for g in include],
            "excludePaths": [glob_to_firecrawl_regex(g) for g in exclude],
            "scrapeOptions": {"formats": ["markdown"], "onlyMainContent": True},
        }
        answer = self._request("POST", self._endpoint("v1/crawl"), body)
        crawl_id = answer.get("id")
        if not isinstance(crawl_id, str) or not crawl_id:
            raise PermanentError("Firecrawl accepted the crawl but returned no crawl id")
        return crawl_id

    def fetch(self, crawl_id: str, next_url: str | None = None) -> FirecrawlBatch:
        """Read the crawl's status and one page of results: the first page, or ``next_url``.

        ``next_url`` (a previous batch's ``next``) is followed only when its scheme, host and
        port are the configured base URL's; anything else raises ``PermanentError`` before any
        request is made, since the request would carry our API key. See the module docstring
        for when to follow ``next``. A crawl whose status is ``failed`` raises ``PermanentError``.
        """
        url = self._status_url(crawl_id) if next_url is None else self._checked_next(next_url)
        answer = self._request("GET", url)
        status = answer.get("status")
        if not isinstance(status, str):
            raise PermanentError(f"Firecrawl returned no status for crawl {crawl_id}")
        if status == "failed":
            reason = _opt_str(answer.get("error")) or "no reason given"
            raise PermanentError(f"Firecrawl crawl {crawl_id} failed: {self._redact(reason)}")
        data = answer.get("data") or []
        if not isinstance(data, list):
            raise PermanentError(f"Firecrawl returned crawl {crawl_id}'s data in an unexpected shape")
        pages = [page for page in map(_parse_page, data) if page is not None]
        return FirecrawlBatch(
            status=status,
            total=_as_int(answer.get("total")),
            completed=_as_int(answer.get("completed")),
            pages=pages,
            next=_opt_str(answer.get("next")),
        )

    def cancel(self, crawl_id: str) -> None:
        """Cancel the crawl. A crawl Firecrawl no longer knows (404, e.g. expired) counts as cancelled."""
        try:
            self._request("DELETE", self._status_url(crawl_id))
        except PermanentError as exc:
            if exc.details != {"status": 404}:
                raise

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- URLs --------------------------------------------------------------------------------------

    def _status_url(self, crawl_id: str) -> httpx.URL:
        if not crawl_id:
            raise PermanentError("empty Firecrawl crawl id")
        return self._endpoint(f"v1/crawl/{quote(crawl_id, safe='')}")

    def _endpoint(self, path: str) -> httpx.URL:
        """``path`` under the base URL, which may itself have a path (a self-hosted reverse proxy)."""
        return self._base.copy_with(path=f"{self._base.path.rstrip('/')}/{path}", query=None, fragment=None)

    def _checked_next(self, next_url: str) -> httpx.URL:
        try:
            url = self._base.join(next_url)
        except httpx.InvalidURL:
            raise PermanentError("Firecrawl returned a malformed next-page URL") from None
        if url.host.lower() != self._base.host.lower() or url.userinfo:
            theirs, ours = ("{}://{}:{}".format(*_origin(u)) for u in (url, self._base))
            raise PermanentError(
                f"refusing to follow Firecrawl's next-page URL on {theirs}: it is not the configured "
                f"Firecrawl host {ours} and the request would carry the API key"
            )
        # same host: its path and query, on our scheme and port (a self-hosted Firecrawl behind
        # plain http still builds ``https`` next URLs), so the key only goes where it is configured
        return self._base.copy_with(path=url.path, query=url.query or None, fragment=None)

    # -- HTTP --------------------------------------------------------------------------------------

    def _request(self, method: str, url: httpx.URL, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its JSON object, or raise the mapped lorebase error."""
        what = f"Firecrawl {method} {url.path}"
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException:
            raise TransientError(f"{what} timed out after {self._timeout:g} s") from None
        except httpx.UnsupportedProtocol as exc:
            raise PermanentError(f"{what}: {exc}") from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"{what}: network error ({type(exc).__name__}: {self._redact(str(exc))})"
            ) from None
        if not response.is_success:
            raise self._status_error(what, response)
        try:
            answer = response.json()
        except ValueError:
            raise TransientError(
                f"{what}: HTTP {response.status_code} with a body that is not JSON (truncated, or a proxy's page?)"
            ) from None
        if not isinstance(answer, dict):
            raise PermanentError(f"{what}: the answer is not a JSON object; is the base URL a Firecrawl API?")
        if answer.get("success") is False:
            raise PermanentError(f"{what}: {self._error_text(response)}")
        return answer

    def _status_error(self, what: str, response: httpx.Response) -> TransientError | PermanentError:
        code = response.status_code
        text = self._error_text(response)
        details = {"status": code}
        if code in (401, 403):
            return PermanentError(f"Firecrawl rejected the API key (HTTP {code}): {text}", details=details)
        if code == 402:
            return PermanentError(
                f"Firecrawl refused the request: payment required, the account may be out of credits (HTTP 402): {text}",
                details=details,
            )
        if code == 429:
            return TransientError(
                f"{what}: rate limited by Firecrawl (HTTP 429): {text}",
                retry_after=_retry_after(response),
                details=details,
            )
        if code == 408 or code >= 500:
            return TransientError(
                f"{what}: HTTP {code}: {text}", retry_after=_retry_after(response), details=details
            )
        return PermanentError(f"{what}: HTTP {code}: {text}", details=details)

    def _error_text(self, response: httpx.Response) -> str:
        """The server's ``error`` (and ``details``) text, else the start of its body; key redacted."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            text = payload["error"]
            if payload.get("details"):
                text += f" ({json.dumps(payload['details'], ensure_ascii=False)})"
        else:
            text = " ".join(response.text.split()) or response.reason_phrase or "no error text"
        text = self._redact(text)  # before cutting, so that no prefix of the key survives
        return text[:_ERROR_TEXT_LIMIT] + "…" if len(text) > _ERROR_TEXT_LIMIT else text

    def _redact(self, text: str) -> str:
        """Never let the API key into a message, even when a server or proxy echoes it back."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text
