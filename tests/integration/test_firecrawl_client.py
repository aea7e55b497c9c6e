"""``FirecrawlClient`` against a loopback server speaking Firecrawl's v1 crawl protocol.

The fake (``tests/support/firecrawl_server.py``) is a real HTTP server on 127.0.0.1, so requests,
headers, pagination and error statuses all cross a socket. Only the non-JSON-body case uses an
``httpx.MockTransport``, since the fake always answers JSON.
"""

from __future__ import annotations

import fnmatch
import re
import socket
from collections.abc import Iterator

import httpx
import pytest

from lorebase.crawl.firecrawl import FirecrawlBatch, FirecrawlClient, FirecrawlPage, glob_to_firecrawl_regex
from lorebase.errors import PermanentError, TransientError
from support.firecrawl_server import FakeFirecrawl

SITE = "https://docs.example.test"
PAGES = {f"{SITE}/docs/page-{i:02d}": (f"Page {i}", f"# Page {i}\n\nBody of page {i}.") for i in range(23)}


@pytest.fixture
def fake() -> Iterator[FakeFirecrawl]:
    server = FakeFirecrawl(PAGES, page_size=5, polls_before_done=2)
    with server:
        yield server


@pytest.fixture
def client(fake: FakeFirecrawl) -> Iterator[FirecrawlClient]:
    with FirecrawlClient(fake.base_url, fake.api_key, timeout=5.0) as c:
        yield c


def wait_completed(client: FirecrawlClient, crawl_id: str, max_polls: int = 20) -> FirecrawlBatch:
    """Poll the status (never ``next``: it is always present while scraping) until it is final."""
    for _ in range(max_polls):
        batch = client.fetch(crawl_id)
        if batch.status != "scraping":
            return batch
    raise AssertionError(f"crawl {crawl_id} still scraping after {max_polls} polls")


def read_all(client: FirecrawlClient, crawl_id: str) -> tuple[list[FirecrawlPage], int]:
    """Every page of a finished crawl, following ``next``; also how many ``next`` pages were read."""
    batch = wait_completed(client, crawl_id)
    pages, follows = list(batch.pages), 0
    while batch.next:
        batch = client.fetch(crawl_id, batch.next)
        pages.extend(batch.pages)
        follows += 1
    return pages, follows


def test_start_crawl_sends_the_documented_body_with_the_bearer_key(
    fake: FakeFirecrawl, client: FirecrawlClient
) -> None:
    crawl_id = client.start_crawl(
        f"{SITE}/docs/", limit=50, max_depth=2, include=["/docs/*"], exclude=["/docs/private/*", "*.pdf"]
    )

    assert crawl_id
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/crawl"
    assert request.headers["authorization"] == f"Bearer {fake.api_key}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "url": f"{SITE}/docs/",
        "limit": 50,
        "maxDepth": 2,
        "includePaths": ["^/docs/.*$"],
        "excludePaths": ["^/docs/private/.*$", "^.*\\.pdf$"],
        "scrapeOptions": {"formats": ["markdown"], "onlyMainContent": True},
    }


def test_polling_until_completed_reads_every_page_across_next_pages_exactly_once(
    fake: FakeFirecrawl, client: FirecrawlClient
) -> None:
    crawl_id = client.start_crawl(f"{SITE}/docs/", limit=100, max_depth=3, include=[], exclude=[])

    first = client.fetch(crawl_id)
    assert first.status == "scraping"
    assert first.next is not None  # as Firecrawl: present while scraping, hence poll first
    pages, follows = read_all(client, crawl_id)

    assert follows >= 3
    urls = [page.url for page in pages]
    assert sorted(urls) == sorted(PAGES)
    assert len(urls) == len(set(urls))
    page = next(p for p in pages if p.url == f"{SITE}/docs/page-07")
    assert (page.title, page.markdown, page.status_code, page.error) == (
        "Page 7",
        PAGES[page.url][1],
        200,
        None,
    )
    assert page.metadata["sourceURL"] == page.url
    skips = [r.query["skip"][0] for r in fake.requests if r.method == "GET" and "skip" in r.query]
    assert skips == ["5", "10", "15", "20"]
    assert all(r.headers["authorization"] == f"Bearer {fake.api_key}" for r in fake.requests)


def test_include_exclude_globs_and_limit_reach_the_server(
    fake: FakeFirecrawl, client: FirecrawlClient
) -> None:
    crawl_id = client.start_crawl(
        f"{SITE}/docs/", limit=4, max_depth=1, include=["/docs/page-1?"], exclude=["/docs/page-1[!0-2]"]
    )

    pages, _ = read_all(client, crawl_id)

    assert [p.url for p in pages] == [f"{SITE}/docs/page-{i}" for i in (10, 11, 12)]


def test_page_errors_are_reported_per_page() -> None:
    url = f"{SITE}/docs/page-03"
    fake = FakeFirecrawl(PAGES, polls_before_done=0, page_errors={url: (404, "Not Found")})
    with fake as base, FirecrawlClient(base, fake.api_key) as client:
        pages, _ = read_all(client, client.start_crawl(SITE, limit=5, max_depth=1, include=[], exclude=[]))

    broken = next(p for p in pages if p.url == url)
    assert (broken.status_code, broken.error, broken.markdown) == (404, "Not Found", "")


def test_rejected_key_is_permanent_and_never_leaks(fake: FakeFirecrawl) -> None:
    secret = "fc-wrong-secret-key-42"
    with FirecrawlClient(fake.base_url, secret) as client, pytest.raises(PermanentError) as caught:
        client.start_crawl(SITE, limit=1, max_depth=0, include=[], exclude=[])

    message = str(caught.value)
    assert "Firecrawl rejected the API key" in message
    assert "401" in message
    assert secret not in message and secret not in repr(caught.value.details)


def test_a_server_echoing_the_key_gets_it_redacted(fake: FakeFirecrawl, client: FirecrawlClient) -> None:
    fake.fail_once(400, error=f"bad key {fake.api_key} in request")

    with pytest.raises(PermanentError) as caught:
        client.start_crawl(SITE, limit=1, max_depth=0, include=[], exclude=[])

    assert fake.api_key not in str(caught.value)
    assert "[redacted]" in str(caught.value)


def test_out_of_credits_is_permanent(fake: FakeFirecrawl, client: FirecrawlClient) -> None:
    fake.fail_once(402, error="Insufficient credits")

    with pytest.raises(PermanentError, match=r"402.*Insufficient credits"):
        client.start_crawl(SITE, limit=1, max_depth=0, include=[], exclude=[])


def test_rate_limit_is_transient_with_retry_after(fake: FakeFirecrawl, client: FirecrawlClient) -> None:
    fake.fail_once(429, retry_after=7, error="Rate limit exceeded")

    with pytest.raises(TransientError, match="429") as caught:
        client.start_crawl(SITE, limit=1, max_depth=0, include=[], exclude=[])

    assert caught.value.retry_after == 7
    assert client.start_crawl(SITE, limit=1, max_depth=0, include=[], exclude=[])  # once only


def test_server_error_is_transient(fake: FakeFirecrawl, client: FirecrawlClient) -> None:
    crawl_id = client.start_crawl(SITE, limit=3, max_depth=0, include=[], exclude=[])
    fake.fail_once(500, error="Internal server error")

    with pytest.raises(TransientError, match="500") as caught:
        client.fetch(crawl_id)

    assert caught.value.retry_after is None
    assert client.fetch(crawl_id).status == "scraping"


def test_next_url_on_another_host_is_refused_without_a_request(
    fake: FakeFirecrawl, client: FirecrawlClient
) -> None:
    evil = FakeFirecrawl(PAGES, api_key=fake.api_key)  # a second loopback server that records requests
    with evil as evil_base:
        fake.next_base_url = evil_base.replace("127.0.0.1", "localhost")  # another host name
        crawl_id = client.start_crawl(SITE, limit=100, max_depth=3, include=[], exclude=[])
        batch = wait_completed(client, crawl_id)
        assert batch.next is not None and batch.next.startswith(fake.next_base_url)

        with pytest.raises(PermanentError, match="refusing to follow") as caught:
            client.fetch(crawl_id, batch.next)

        assert evil.requests == []
        assert fake.api_key not in str(caught.value)


def test_next_url_on_the_same_host_is_followed_on_the_configured_scheme_and_port(
    fake: FakeFirecrawl, client: FirecrawlClient
) -> None:
    """Self-hosted Firecrawl over plain http still writes ``https`` next URLs."""
    port = int(fake.base_url.rsplit(":", 1)[1])
    crawl_id = client.start_crawl(SITE, limit=3, max_depth=0, include=[], exclude=[])
    wait_completed(client, crawl_id)
    before = len(fake.requests)

    batch = client.fetch(crawl_id, f"https://127.0.0.1:{port + 1}/v1/crawl/{crawl_id}?skip=1")

    assert [r.query.get("skip") for r in fake.requests[before:]] == [["1"]]
    assert batch.status == "completed" and len(batch.pages) == 2


def test_failed_crawl_is_permanent() -> None:
    fake = FakeFirecrawl(PAGES, polls_before_done=1, final_status="failed")
    with fake as base, FirecrawlClient(base, fake.api_key) as client:
        crawl_id = client.start_crawl(SITE, limit=5, max_depth=1, include=[], exclude=[])
        assert client.fetch(crawl_id).status == "scraping"
        with pytest.raises(PermanentError, match=f"crawl {crawl_id} failed: simulated crawl failure"):
            client.fetch(crawl_id)


def test_cancel_sends_delete_and_the_crawl_reports_cancelled(
    fake: FakeFirecrawl, client: FirecrawlClient
) -> None:
    crawl_id = client.start_crawl(SITE, limit=5, max_depth=1, include=[], exclude=[])

    client.cancel(crawl_id)
    client.cancel("no-such-crawl")  # an unknown (expired) crawl counts as cancelled

    assert [(r.method, r.path) for r in fake.requests[1:]] == [
        ("DELETE", f"/v1/crawl/{crawl_id}"),
        ("DELETE", "/v1/crawl/no-such-crawl"),
    ]
    assert client.fetch(crawl_id).status == "cancelled"


def test_unknown_crawl_is_permanent(client: FirecrawlClient) -> None:
    with pytest.raises(PermanentError, match=r"404.*Job not found"):
        client.fetch("no-such-crawl")


def test_network_errors_are_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FirecrawlClient(f"http://127.0.0.1:{port}", "fc-key") as client, pytest.raises(TransientError):
        client.fetch("abc")


def test_a_body_that_is_not_json_is_transient() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>gateway</html>"))
    with (
        FirecrawlClient("https://fc.test", "fc-key", transport=transport) as client,
        pytest.raises(TransientError, match="not JSON"),
    ):
        client.fetch("abc")


@pytest.mark.parametrize(
    ("glob", "paths"),
    [
        ("/docs/*", ["/docs/", "/docs/a/b", "/doc", "/x/docs/a"]),
        ("*.html", ["/a.html", "/a.htm", "/a.html/b"]),
        ("/v?/api", ["/v1/api", "/v10/api"]),
        ("/p[0-2]/[!x]y", ["/p1/ay", "/p3/ay", "/p1/xy"]),
        ("/a(b)+c|d$/[x", ["/a(b)+c|d$/[x", "/abc"]),
        ("/[]]/[!]]", ["/]/a", "/]/]"]),
    ],
)
def test_glob_translation_matches_fnmatch(glob: str, paths: list[str]) -> None:
    pattern = glob_to_firecrawl_regex(glob)
    assert "(?" not in pattern and "\\Z" not in pattern  # Python-only syntax that JavaScript misreads
    for path in paths:
        assert bool(re.search(pattern, path)) == fnmatch.fnmatchcase(path, glob), (glob, path)
