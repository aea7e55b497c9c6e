"""The ``crawl_source`` task's handler (``tasks/crawl_source.py``): a web source's crawl, resumable from its frontier in the database.

One job per source and pipeline (finalize, ``POST /kbs/{id}/sources``, ``/refresh``). It fetches
pages concurrently (asyncio, per-host gates) and commits results in small batches, each in one
fenced transaction: the page rows (status, validators, content hash, links), the newly
discovered pages, and the documents with their ``process_document`` jobs. Parsing, chunking and
embedding happen in those jobs, on other workers, while the crawl goes on.

Why resumable this way: a page is ``queued`` until the transaction that saves its document marks
it done, so a crawl stopped anywhere (pause, SIGKILL, lost lease) picks up the queued rows and
never fetches a finished page again; at worst the pages in flight at the moment of the crash are
fetched twice, and their documents are upserted by URL, so nothing is duplicated.

A refresh re-queues every known page of the source with its ``ETag`` / ``Last-Modified`` and
content hash: a 304 or an identical body costs no parse and no embedding, a changed body
re-processes that document only (unchanged chunks keep their vectors), 404/410 removes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lorebase.db.engine import insert_or_skip
from lorebase.db.models import CrawlPage, Document, KnowledgeBase, Pipeline, Source, utcnow
from lorebase.errors import Interrupted, LeaseLost, PermanentError
from lorebase.jobs import retry
from lorebase.jobs.context import JobContext
from lorebase.metrics import CRAWL_PAGES
from lorebase.pipeline import progress
from lorebase.pipeline.documents import (
    SourceItem,
    add_items,
    record_failed_page,
    remove_documents,
    sanitize_filename,
)
from lorebase.runtime import Runtime
from lorebase.tasks import crawl_source

from .counters import SKIPPED, apply_page_counts
from .fetch import Fetcher, FetchResult, HostGate
from .guard import AddressPolicy, BlockedAddress, blocked_cause, guarded_client, precheck_url
from .links import PAGE_TYPES, looks_like_document, page_links
from .options import CrawlOptions, parse_options
from .robots import Robots, parse_sitemap, robots_from_response
from .urls import normalize_url, same_host, url_path_matches

log = logging.getLogger(__name__)

COMMIT_EVERY_PAGES = 16
COMMIT_EVERY_SECONDS = 1.0
CONTROL_EVERY_SECONDS = 0.25
#: frontier pages read at once (fetched in order from memory; the rest stay queued in the table)
FRONTIER_READ = 64
MAX_SITEMAPS = 20
Resolver = Callable[[str, int], Awaitable[list[str]]]


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(slots=True, frozen=True)
class _Ref:
    id: int
    url: str
    depth: int
    etag: str | None
    last_modified: str | None


class CrawlSource:
    """Job handler. ``resolver`` replaces DNS resolution (tests of the SSRF guard only)."""

    resolver: Resolver | None = None

    def run(self, ctx: JobContext[Runtime]) -> None:
        source_id = ctx.job.payload["source_id"]
        with ctx.runtime.db.read_session() as s:
            source = s.get(Source, source_id)
            if source is None or source.url is None:
                raise PermanentError("the web source was deleted")
            start, raw_options, kb_id = source.url, dict(source.options or {}), source.kb_id
        options = parse_options(raw_options)
        if options.engine == "firecrawl":
            from .firecrawl_job import run_firecrawl

            run_firecrawl(ctx, source_id, kb_id, start, options)
            return
        asyncio.run(Crawl(ctx, source_id, kb_id, start, options, resolver=self.resolver).main())

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        """The crawl itself gave up (dead after retries): say so on the pipeline."""
        if ctx.job.pipeline_id:
            session.execute(
                update(Pipeline)
                .where(Pipeline.id == ctx.job.pipeline_id)
                .values(error=f"crawl of a web source stopped: {message}", updated_at=utcnow())
            )


class Crawl:
    def __init__(
        self,
        ctx: JobContext[Runtime],
        source_id: str,
        kb_id: str,
        start: str,
        options: CrawlOptions,
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self.ctx = ctx
        self.runtime = ctx.runtime
        self.settings = ctx.runtime.settings.crawl
        self.source_id = source_id
        self.kb_id = kb_id
        self.start = start
        self.start_key = normalize_url(start) or start
        self.options = options
        self.run_id = ctx.job.pipeline_id or ""
        self.resolver = resolver
        self.policy = AddressPolicy.from_settings(
            self.settings.allow_private_networks, self.settings.allowed_hosts
        )
        self._gates: dict[str, HostGate] = {}
        self._robots: dict[str, asyncio.Task[Robots]] = {}
        self.client: Any = None
        self.fetcher: Fetcher | None = None
        #: scope decisions, per URL (the options do not change during a crawl)
        self._scope: dict[str, str | None] = {}
        #: url hashes this source is known to have rows for (committed), and those the open
        #: transaction inserts: the frontier is asked only about links not seen before
        self._known: set[str] = set()
        self._inserting: set[str] = set()
        #: content hash -> URL of the pages kept so far, for the batch being committed
        self._twins: dict[str, str] = {}

    # -- scope, politeness -------------------------------------------------------------------
    def out_of_scope(self, url: str) -> str | None:
        """Why ``url`` is not crawled (None: it is in scope)."""
        try:
            return self._scope[url]
        except KeyError:
            reason = self._scope[url] = self._out_of_scope(url)
            return reason

    def _out_of_scope(self, url: str) -> str | None:
        opts = self.options
        url = normalize_url(url) or url
        if opts.same_domain and not same_host(url, self.start):
            return "another host (crawl.same_domain)"
        if opts.exclude and url_path_matches(url, opts.exclude):
            return "excluded by crawl.exclude"
        if opts.include and url != self.start_key and not url_path_matches(url, opts.include):
            return "not matched by crawl.include"
        if not looks_like_document(url):
            return "not a page or document"
        return None

    def gate(self, host: str) -> HostGate:
        gate = self._gates.get(host)
        if gate is None:
            gate = self._gates[host] = HostGate(self.options.concurrency, self.options.delay_seconds)
        return gate

    async def robots(self, url: str) -> Robots:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        task = self._robots.get(origin)
        if task is None:
            task = self._robots[origin] = asyncio.ensure_future(self._load_robots(origin, parts.netloc))
        return await task

    async def _load_robots(self, origin: str, host: str) -> Robots:
        try:
            status, body = await self._get_small(f"{origin}/robots.txt", max_bytes=512 * 1024)
        except BlockedAddress:
            return Robots()  # the page request is refused by the guard too, with that error on it
        robots = robots_from_response(status, body)
        delay = robots.crawl_delay
        if delay:
            gate = self.gate(host)
            gate.delay = max(gate.delay, min(delay, 60.0))
        return robots

    async def _get_small(self, url: str, *, max_bytes: int) -> tuple[int | None, bytes | None]:
        """A guarded GET for robots.txt and sitemaps (redirects followed, each hop re-checked);
        raises BlockedAddress when the guard refuses a hop, (None, None) when unreachable."""

        current = url
        try:
            for _ in range(5):
                precheck_url(current, self.policy)
                async with self.gate(urlsplit(current).netloc).slot():
                    resp = await asyncio.wait_for(
                        self.client.get(current), self.settings.request_timeout_seconds
                    )
                if resp.is_redirect and resp.headers.get("location"):
                    nxt = urldefrag(urljoin(current, resp.headers["location"].strip()))[0]
                    if normalize_url(nxt) is None:
                        return None, None
                    current = nxt
                    continue
                body = resp.content
                return resp.status_code, (body if len(body) <= max_bytes else None)
        except BlockedAddress as exc:
            raise blocked_cause(exc) or exc from None
        except (TimeoutError, OSError) as exc:
            log.info("could not fetch %s: %s", url, exc)
        except Exception as exc:  # httpx errors and the like: treated as unreachable
            blocked = blocked_cause(exc)
            if blocked is not None:
                raise blocked from None
            log.info("could not fetch %s: %s", url, exc)
        return None, None

    # -- main loop ---------------------------------------------------------------------------
    async def main(self) -> None:
        async with guarded_client(
            self.policy,
            user_agent=self.settings.user_agent,
            timeout=self.settings.request_timeout_seconds,
            resolver=self.resolver,
            max_connections=max(8, self.options.concurrency * 2),
        ) as client:
            self.client = client
            self.fetcher = Fetcher(
                client,
                self.policy,
                gate=self.gate,
                robots=self.robots if self.options.respect_robots else None,
                scope=self.out_of_scope,
                max_bytes=self.settings.max_page_bytes,
                timeout=self.settings.request_timeout_seconds,
            )
            if not self.ctx.job.checkpoint.get("seeded"):
                await self.seed()
            await self.crawl()
        self.finish()

    async def seed(self) -> None:
        sitemap_urls: list[str] = []
        if self.options.use_sitemap:
            sitemap_urls = await self._sitemap_urls()
        with self._transaction() as s:
            # a refresh: every page known from earlier runs is queued again, validators kept
            s.execute(
                update(CrawlPage)
                .where(CrawlPage.source_id == self.source_id, CrawlPage.run_id != self.run_id)
                .values(
                    run_id=self.run_id,
                    status="queued",
                    attempts=0,
                    not_before=None,
                    error=None,
                    http_status=None,
                )
            )
            self._insert_pages(s, [(self.start, 0)])
            self._insert_pages(
                s, [(u, 1) for u in sitemap_urls if self.out_of_scope(u) is None], cap=self.options.max_pages
            )
            self._update_counters(s)
            self.ctx.save_checkpoint(s, {**self.ctx.job.checkpoint, "seeded": True})

    async def _sitemap_urls(self) -> list[str]:
        parts = urlsplit(self.start)
        origin = f"{parts.scheme}://{parts.netloc}"
        robots = await self.robots(self.start) if self.options.respect_robots else Robots()
        todo = list(robots.sitemaps) or [f"{origin}/sitemap.xml"]
        seen: set[str] = set()
        urls: list[str] = []
        while todo and len(seen) < MAX_SITEMAPS:
            url = todo.pop(0)
            if url in seen or not same_host(url, self.start):
                continue
            seen.add(url)
            try:
                status, body = await self._get_small(url, max_bytes=50 * 1024 * 1024)
            except BlockedAddress:
                continue
            if status != 200 or not body:
                continue
            found = parse_sitemap(body, url)
            todo.extend(found.sitemaps)
            urls.extend(found.urls)
        return urls

    async def _fetch(self, ref: _Ref) -> FetchResult:
        """Fetch a page and read its links in a thread, so the commit is database work only."""
        assert self.fetcher is not None
        result = await self.fetcher.fetch(ref.url, etag=ref.etag, last_modified=ref.last_modified)
        CRAWL_PAGES.labels(result.outcome).inc()
        if result.outcome == "ok" and result.body is not None:
            await asyncio.to_thread(_read_body, result, result.final_url or ref.url)
        return result

    async def crawl(self) -> None:
        assert self.fetcher is not None
        in_flight: dict[asyncio.Task[FetchResult], _Ref] = {}
        ahead: deque[_Ref] = deque()  # read from the frontier, not fetched yet
        results: list[tuple[_Ref, FetchResult]] = []
        committing: list[tuple[_Ref, FetchResult]] = []
        commit_task: asyncio.Future[None] | None = None
        last_commit = last_check = time.monotonic()
        want_more = True
        target = max(4, self.options.concurrency * 2)
        try:
            while True:
                if time.monotonic() - last_check >= CONTROL_EVERY_SECONDS:
                    # pause / cancel / lost lease are noticed within a fraction of a second; what
                    # was fetched already is saved first, so a resume does not fetch it again
                    try:
                        await asyncio.to_thread(self.ctx.check_control, resumable=True)
                    except (Interrupted, LeaseLost):
                        if commit_task is not None:
                            await commit_task
                            commit_task = None
                        if results:
                            await asyncio.to_thread(self._commit, results)
                        raise
                    last_check = time.monotonic()
                if commit_task is not None and commit_task.done():
                    commit_task.result()  # a failed commit (lost lease ...) stops the crawl here
                    commit_task, committing, want_more = None, [], True
                if want_more and len(in_flight) < target and not ahead:
                    busy = {ref.id for ref, _ in [*results, *committing]} | {r.id for r in in_flight.values()}
                    refs = await asyncio.to_thread(self._next_pages, FRONTIER_READ + len(busy), busy)
                    ahead.extend(refs)
                    want_more = bool(refs)
                while ahead and len(in_flight) < target:
                    ref = ahead.popleft()
                    in_flight[asyncio.ensure_future(self._fetch(ref))] = ref
                if not in_flight:
                    if commit_task is not None:
                        await commit_task  # its pages may have discovered more
                        continue
                    if results:
                        await asyncio.to_thread(self._commit, results)
                        results, last_commit, want_more = [], time.monotonic(), True
                        continue
                    wait = await asyncio.to_thread(self._next_retry_in)
                    if wait is None:
                        return  # the frontier is empty: the crawl is done
                    await asyncio.to_thread(self.ctx.check_control, resumable=True)
                    await asyncio.sleep(min(wait, 1.0))
                    want_more = True
                    continue
                done, _ = await asyncio.wait(
                    in_flight, timeout=CONTROL_EVERY_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    results.append((in_flight.pop(task), task.result()))
                due = time.monotonic() - last_commit >= COMMIT_EVERY_SECONDS
                if commit_task is None and results and (len(results) >= COMMIT_EVERY_PAGES or due):
                    # one commit at a time, in a thread: fetching goes on meanwhile
                    committing, results = results, []
                    commit_task = asyncio.ensure_future(asyncio.to_thread(self._commit, committing))
                    last_commit = time.monotonic()
        finally:
            if commit_task is not None:
                await asyncio.gather(commit_task, return_exceptions=True)
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _next_pages(self, limit: int, busy: set[int]) -> list[_Ref]:
        now = utcnow()
        with self.runtime.db.read_session() as s:
            rows = s.execute(
                select(
                    CrawlPage.id,
                    CrawlPage.url,
                    CrawlPage.fetch_url,
                    CrawlPage.depth,
                    CrawlPage.etag,
                    CrawlPage.last_modified,
                )
                .where(
                    CrawlPage.source_id == self.source_id,
                    CrawlPage.run_id == self.run_id,
                    CrawlPage.status == "queued",
                    (CrawlPage.not_before.is_(None)) | (CrawlPage.not_before <= now),
                )
                .order_by(CrawlPage.depth, CrawlPage.id)
                .limit(limit)
            ).all()
        return [
            _Ref(r.id, r.fetch_url or r.url, r.depth, r.etag, r.last_modified)
            for r in rows
            if r.id not in busy
        ]

    def _next_retry_in(self) -> float | None:
        """Seconds until the earliest page waiting for a retry is due; None when none waits."""
        with self.runtime.db.read_session() as s:
            queued, when = s.execute(
                select(func.count(), func.min(CrawlPage.not_before)).where(
                    CrawlPage.source_id == self.source_id,
                    CrawlPage.run_id == self.run_id,
                    CrawlPage.status == "queued",
                )
            ).one()
        if not queued:
            return None
        if when is None:
            return 0.0
        return max(0.0, (when - utcnow()).total_seconds())

    # -- saving ------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self, *, progress: bool = False) -> Iterator[Session]:
        """The job's fenced transaction; the URLs it queued count as known once it commits."""
        self._inserting.clear()
        with self.ctx.transaction(progress=progress) as s:
            yield s
        self._known |= self._inserting

    def _commit(self, results: list[tuple[_Ref, FetchResult]]) -> None:
        with self._transaction(progress=True) as s:
            kb = s.get(KnowledgeBase, self.kb_id)
            pipeline = s.get(Pipeline, self.run_id)
            if kb is None or pipeline is None:
                raise PermanentError("the knowledge base was deleted")
            pages = {
                page.id: page
                for page in s.execute(
                    select(CrawlPage).where(CrawlPage.id.in_([ref.id for ref, _ in results]))
                ).scalars()
            }
            self._twins = self._known_contents(s, results)
            items: list[tuple[CrawlPage, SourceItem]] = []
            discovered: list[tuple[str, int]] = []
            for ref, result in results:
                page = pages.get(ref.id)
                if page is None or page.run_id != self.run_id or page.status != "queued":
                    continue
                page.attempts += 1
                page.fetched_at = utcnow()
                page.http_status = result.status
                item = self._apply(s, kb, pipeline, page, result, discovered)
                if item is not None:
                    items.append((page, item))
            if items:
                outcome = add_items(
                    s, self.runtime, kb, pipeline, [item for _, item in items], priority=crawl_source.PRIORITY
                )
                for (page, _), out in zip(items, outcome, strict=True):
                    page.document_id = out["id"]
                    page.status = "unchanged" if out["status"] == "skipped" else "fetched"
            if discovered:
                self._insert_pages(s, discovered, cap=self.options.max_pages)
            self._update_counters(s)
            progress.refresh_progress(s, self.run_id)
        self.runtime.queue.notify()

    def _known_contents(self, s: Session, results: list[tuple[_Ref, FetchResult]]) -> dict[str, str]:
        """Content hash -> URL of this run's pages already kept, for the hashes of this batch
        (a page with the same content as one of them is a twin, skipped)."""
        digests = {result.digest for _, result in results if result.digest}
        if not digests:
            return {}
        rows = s.execute(
            select(CrawlPage.content_hash, CrawlPage.url).where(
                CrawlPage.source_id == self.source_id,
                CrawlPage.run_id == self.run_id,
                CrawlPage.content_hash.in_(digests),
                CrawlPage.status.in_(("fetched", "unchanged")),
            )
        ).all()
        return {digest: url for digest, url in rows if digest is not None}

    def _apply(
        self,
        s: Session,
        kb: KnowledgeBase,
        pipeline: Pipeline,
        page: CrawlPage,
        result: FetchResult,
        discovered: list[tuple[str, int]],
    ) -> SourceItem | None:
        """Record one fetch outcome on its page; returns the document to upsert, if any."""
        outcome = result.outcome
        if outcome == "ok" and result.body is not None and result.media_type is not None:
            return self._fetched(s, page, result, discovered)
        if outcome == "not_modified":
            page.status = "unchanged"
            if page.content_hash:
                self._twins.setdefault(page.content_hash, page.url)
            if page.depth < self.options.max_depth:  # its links, as stored when it last changed
                discovered.extend((link, page.depth + 1) for link in page.links or [])
            return None
        if outcome == "skipped":
            page.status, page.error = "skipped", result.error
            return None
        if outcome == "gone" and page.document_id is not None:
            doc = s.get(Document, page.document_id)
            if doc is not None and doc.status != "failed":
                remove_documents(s, self.runtime, kb, [page.document_id])
                page.document_id, page.status, page.error = None, "gone", result.error
                page.content_hash = page.etag = page.last_modified = None
                return None
        delay = (
            retry.page_retry(page.attempts, self.settings.max_attempts, result.retry_after)
            if outcome == "retry"
            else None
        )
        if delay is not None:
            page.not_before = utcnow() + timedelta(seconds=delay)
            page.error = f"{result.error}; retrying in {delay:.0f} s"
            return None
        kind = "transient" if outcome == "retry" else "permanent"
        message = result.error or "could not fetch the page"
        if outcome == "retry":
            message = f"{message} (gave up after {page.attempts} attempts)"
        page.status, page.error = "failed", message
        page.document_id = record_failed_page(
            s, kb, pipeline, source_id=self.source_id, url=page.url, message=message, kind=kind
        )
        return None

    def _fetched(
        self, s: Session, page: CrawlPage, result: FetchResult, discovered: list[tuple[str, int]]
    ) -> SourceItem | None:
        assert result.body is not None and result.media_type is not None
        body = result.body
        digest = result.digest or hashlib.sha256(body).hexdigest()
        page.etag, page.last_modified, page.content_hash = result.etag, result.last_modified, digest
        page.error = None
        noindex = False
        if result.media_type in PAGE_TYPES:
            found = result.links or page_links(body, result.final_url or page.url)
            noindex = found.noindex
            in_scope = [u for u in found.links if self.out_of_scope(u) is None]
            page.links = in_scope
            if page.depth < self.options.max_depth:
                discovered.extend((link, page.depth + 1) for link in in_scope)
            canonical = found.canonical
            if canonical and normalize_url(canonical) != page.url and self.out_of_scope(canonical) is None:
                reason = self._canonical_elsewhere(s, page, canonical)
                if reason:
                    page.status, page.error = "skipped", reason
                    return None
        if noindex:
            page.status, page.error = "skipped", "the page asks not to be indexed (meta robots noindex)"
            return None
        twin = self._twins.get(digest)
        if twin is not None and twin != page.url:
            page.status, page.error = "skipped", f"same content as {twin}"
            return None
        page.status = "fetched"  # provisional: ``unchanged`` when its document turns out the same
        self._twins[digest] = page.url
        key = self.runtime.blobs.put(body)
        return SourceItem(
            source_type="web",
            blob_key=key,
            media_type=result.media_type,
            content_hash=digest,
            size_bytes=len(body),
            external_id=page.url,
            source_url=page.fetch_url or page.url,
            source_id=self.source_id,
            filename=_filename(page.url) if result.media_type not in PAGE_TYPES else None,
            metadata={"url": page.fetch_url or page.url},
        )

    def _canonical_elsewhere(self, s: Session, page: CrawlPage, canonical: str) -> str | None:
        """The page names another URL as canonical: index that one (once) instead of this one."""
        row = s.execute(
            select(CrawlPage).where(
                CrawlPage.source_id == self.source_id,
                CrawlPage.url_hash == url_hash(normalize_url(canonical) or canonical),
            )
        ).scalar_one_or_none()
        if row is None:
            self._insert_pages(s, [(canonical, page.depth)])
            return f"its canonical URL is {canonical}"
        if row.run_id == self.run_id and row.status in ("queued", "fetched", "unchanged"):
            return f"its canonical URL is {canonical}"
        return None  # the canonical page could not be indexed: keep this one

    def _insert_pages(self, s: Session, pages: list[tuple[str, int]], *, cap: int | None = None) -> None:
        """Queue new URLs for this run (known ones are left alone), at most ``cap`` in the run."""
        unique: dict[str, tuple[str, str, int]] = {}
        for fetch_url, depth in pages:
            key = normalize_url(fetch_url)
            if key is not None:
                unique.setdefault(url_hash(key), (key, fetch_url, depth))
        if not unique:
            return
        known = {h for h in unique if h in self._known or h in self._inserting}
        hashes = [h for h in unique if h not in known]
        for i in range(0, len(hashes), 500):
            found = set(
                s.execute(
                    select(CrawlPage.url_hash).where(
                        CrawlPage.source_id == self.source_id, CrawlPage.url_hash.in_(hashes[i : i + 500])
                    )
                ).scalars()
            )
            known |= found
            self._known |= found  # rows committed before this transaction
        fresh = [(h, u, f, d) for h, (u, f, d) in unique.items() if h not in known]
        if cap is not None:
            count = s.execute(
                select(func.count())
                .select_from(CrawlPage)
                .where(CrawlPage.source_id == self.source_id, CrawlPage.run_id == self.run_id)
            ).scalar_one()
            fresh = fresh[: max(0, cap - count)]
        if not fresh:
            return
        now = utcnow()
        rows = [
            {
                "source_id": self.source_id,
                "kb_id": self.kb_id,
                "workspace_id": self.ctx.job.workspace_id,
                "url": u,
                "fetch_url": f,
                "url_hash": h,
                "depth": d,
                "status": "queued",
                "run_id": self.run_id,
                "attempts": 0,
                "links": [],
                "updated_at": now,
            }
            for h, u, f, d in fresh
        ]
        s.execute(insert_or_skip(s, CrawlPage, rows))
        self._inserting.update(h for h, _, _, _ in fresh)

    def _update_counters(self, s: Session) -> None:
        rows = s.execute(
            select(CrawlPage.status, CrawlPage.http_status.is_not(None), func.count())
            .where(CrawlPage.source_id == self.source_id, CrawlPage.run_id == self.run_id)
            .group_by(CrawlPage.status, CrawlPage.http_status.is_not(None))
        ).all()
        apply_page_counts(
            s,
            self.ctx,
            {
                "discovered": sum(n for _, _, n in rows),
                "fetched": sum(n for _, answered, n in rows if answered),
                "skipped": sum(n for status, _, n in rows if status in SKIPPED),
            },
        )

    def finish(self) -> None:
        with self.ctx.transaction() as s:
            source = s.get(Source, self.source_id)
            if source is not None:
                source.last_refreshed_at = utcnow()
            self._update_counters(s)
            progress.refresh_progress(s, self.run_id)


def _read_body(result: FetchResult, url: str) -> None:
    """What the commit needs from a fetched body, computed off the event loop: its hash and,
    for a page, its links."""
    assert result.body is not None
    result.digest = hashlib.sha256(result.body).hexdigest()
    if result.media_type in PAGE_TYPES:
        result.links = page_links(result.body, url)


def _filename(url: str) -> str | None:
    """A display name for a linked file: the URL's last path segment, decoded and sanitised."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return sanitize_filename(name) if name else None
