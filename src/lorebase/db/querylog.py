"""The query log, written off the request path: rows are queued in memory and a background thread
inserts them in batches, at most ``delay`` seconds after a search.

A search used to insert its log row before it answered. On SQLite that insert takes the single
writer's lock, which ingestion holds for each batch of chunks it writes, so a search waited for the
ingestion's commit; on PostgreSQL it cost a round trip and a commit per query. Now a search only
appends a row (its id and time fixed then, so the ``query_id`` it returns is the row's id) and a
thread of this process writes whatever has queued, once per ``delay`` (``LOREBASE_QUERY_LOG_DELAY_SECONDS``,
1 s by default), in one transaction.

What this promises:

* **A clean shutdown loses nothing**: ``close()`` (the app's lifespan end, the CLI's exit) writes
  what is queued. **A crash loses at most the last ``delay`` seconds of queries** of that process.
* **Read-your-writes in one process**: feedback on a query and listing a KB's queries flush what
  is queued first (:meth:`QueryLogWriter.flush`), so a client never sees its own query missing.
  Behind a load balancer, another API node sees it after at most ``delay``.
* **A bad row never takes its batch with it**: a batch the database refuses is written row by row,
  and a row whose KB was deleted meanwhile is dropped (the KB's log went with it). A database that
  is briefly unavailable keeps the rows queued for the next pass, up to :data:`MAX_QUEUED`
  (the oldest beyond it are dropped, with a warning).

``delay`` 0 writes each row on the request path, as before.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError, OperationalError

from lorebase.db.engine import Database
from lorebase.db.models import QueryLog, new_id, utcnow

log = logging.getLogger("lorebase.querylog")

#: rows kept queued at most while the database cannot take them
MAX_QUEUED = 100_000
#: rows that make the writer flush before ``delay`` has passed
FLUSH_AT = 1_000


class QueryLogWriter:
    def __init__(self, db: Database, *, delay: float = 1.0) -> None:
        self.db, self.delay = db, delay
        self._lock = threading.Lock()  # guards _queued, _thread, _closed
        self._flush_lock = threading.Lock()  # one writer at a time: batches commit in order
        self._queued: list[dict[str, Any]] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(
        self,
        *,
        kb_id: str,
        workspace_id: str,
        query: str,
        mode: str,
        top_k: int,
        filters: dict[str, Any],
        result_chunk_ids: list[str],
        latency_ms: float,
    ) -> str:
        """Queue one query's row; returns its id (valid for feedback at once)."""
        row = {
            "id": new_id(),
            "kb_id": kb_id,
            "workspace_id": workspace_id,
            "query": query,
            "mode": mode,
            "top_k": top_k,
            "filters": filters,
            "result_chunk_ids": result_chunk_ids,
            "latency_ms": latency_ms,
            "feedback": None,
            "comment": None,
            "created_at": utcnow(),
            "feedback_at": None,
        }
        with self._lock:
            direct = self.delay <= 0 or self._closed
            if not direct:
                self._queued.append(row)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="query-log", daemon=True)
                    self._thread.start()
                if len(self._queued) >= FLUSH_AT:
                    self._wake.set()
        if direct:  # on the request path: no thread (delay 0), or the writer has been closed
            with self._flush_lock:
                self._write([row])
        return str(row["id"])

    def holds(self, query_id: str) -> bool:
        """Whether a row with this id is queued (not yet written)."""
        with self._lock:
            return any(row["id"] == query_id for row in self._queued)

    def flush(self) -> None:
        """Write what is queued now (in the caller's thread)."""
        with self._flush_lock:
            with self._lock:
                rows, self._queued = self._queued, []
            if rows:
                self._write(rows)

    def close(self) -> None:
        """Stop the thread and write what is queued: nothing is lost on a clean shutdown."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(30)
        self.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.delay)
            self._wake.clear()
            with self._lock:
                closed = self._closed
            try:
                self.flush()
            except Exception:  # never let the thread die: the rows stay queued for the next pass
                log.exception("writing the query log failed")
            if closed:
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = cast(Table, QueryLog.__table__)
        try:
            with self.db.session() as s:
                s.execute(insert(table), rows)
            return
        except IntegrityError:
            pass  # some row is refused (its KB was deleted meanwhile): row by row below
        except OperationalError as exc:  # locked for too long, or the database is down: retry later
            self._requeue(rows, exc)
            return
        kept = 0
        for i, row in enumerate(rows):
            try:
                with self.db.session() as s:
                    s.execute(insert(table), [row])
                kept += 1
            except IntegrityError:
                continue  # the KB is gone, and its query log with it
            except OperationalError as exc:
                self._requeue(rows[i:], exc)
                return
        if kept < len(rows):
            log.info(
                "query log: %d of %d queries dropped (their knowledge base was deleted)",
                len(rows) - kept,
                len(rows),
            )

    def _requeue(self, rows: list[dict[str, Any]], exc: Exception) -> None:
        with self._lock:
            self._queued[:0] = rows  # before newer rows, so they are written in order
            dropped = len(self._queued) - MAX_QUEUED
            if dropped > 0:
                del self._queued[:dropped]
        log.warning(
            "query log: the database refused a batch of %d (%s); kept for the next pass%s",
            len(rows),
            type(exc).__name__,
            f", {dropped} oldest dropped" if dropped > 0 else "",
        )
