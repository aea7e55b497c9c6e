"""What the stores' in-memory indexes share (``vector_cache.py``, ``keyword_cache.py``): one index
per KB, built on the KB's first search, kept in step with the database through the store's change
log (``change_log.py``: the sqlite store's, or the pgvector store's), evicted least recently
searched first beyond a byte budget.

**Building never holds up a search** when ``background`` is on (``serve`` and the workers: the
runtime's stores): the first search of a KB starts the build in a thread of its own, with its own
read transaction, and is answered by the store's SQL path (``vec0``, FTS5, ``ts_rank_cd``) meanwhile, as are the
searches that follow until the index is ready (a 100k-chunk KB takes seconds, a 1M-chunk one a
minute). Without it (tests, benchmarks) the first search builds the index and waits for it.
A KB whose estimate is larger than the whole budget is never built: SQL answers it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from lorebase.adapters.stores.change_log import Changes

log = logging.getLogger(__name__)

T = TypeVar("T")


class PerKbIndex(Generic[T]):
    def __init__(self, changes: Changes, max_bytes: int, *, background: bool = False) -> None:
        self.changes = changes
        self.max_bytes = max_bytes
        self.background = background
        self._lock = threading.Lock()
        self._kbs: OrderedDict[str, T] = OrderedDict()  # least recently searched first
        self._too_big: set[str] = set()
        self._building: set[str] = set()

    # -- what an index type provides ------------------------------------------------------------
    def _estimate(self, session: Session, kb_id: str) -> int:
        """Bytes the KB's index will take (read before building it)."""
        raise NotImplementedError

    def _build(self, session: Session, kb_id: str, head: Any) -> T:
        """The KB's index as of position ``head`` (or later), read from ``session``."""
        raise NotImplementedError

    def _apply(self, session: Session, kb_id: str, kb: T, head: Any) -> T | None:
        """``kb`` brought up to ``head``; None when it must be built again."""
        raise NotImplementedError

    def _position(self, kb: T) -> Any:
        """The change-log position ``kb`` is at (``Changes.head`` when it was built or updated)."""
        raise NotImplementedError

    def _nbytes(self, kb: T) -> int:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    @contextmanager
    def searching(self, session: Session, kb_id: str) -> Iterator[T | None]:
        """The KB's index as of ``session``'s snapshot (or newer), held under the lock for the
        block (an index is updated in place); None: not here (yet), or not for this session (its
        change log gives it no position), the caller answers from SQL. The change log's head is
        read before the lock is taken."""
        head = self.changes.head(session)
        if head is None:
            yield None
            return
        with self._lock:
            yield self._current(session, kb_id, head)

    def _current(self, session: Session, kb_id: str, head: Any) -> T | None:
        if kb_id in self._too_big:
            return None
        kb = self._kbs.get(kb_id)
        if kb is not None and self.changes.behind(self._position(kb), head):
            kb = self._apply(session, kb_id, kb, head)
            if kb is None:
                del self._kbs[kb_id]
        if kb is None:
            if self.background:
                self._build_in_background(session, kb_id)
                return None
            need = self._fits(session, kb_id)
            if need is None:
                return None
            self._evict(need)
            kb = self._build(session, kb_id, head)
        self._kbs[kb_id] = kb
        self._kbs.move_to_end(kb_id)
        return kb

    def _fits(self, session: Session, kb_id: str) -> int | None:
        """The bytes the KB's index will take; None, remembered, when that is over the whole
        budget (``set.add`` is atomic: a background build calls this without the lock)."""
        need = self._estimate(session, kb_id)
        if need > self.max_bytes:
            self._too_big.add(kb_id)
            return None
        return need

    def _build_in_background(self, session: Session, kb_id: str) -> None:
        if kb_id in self._building:
            return
        self._building.add(kb_id)
        bind = session.get_bind()

        def build() -> None:
            try:
                with Session(bind) as s:  # a read transaction of its own
                    need = self._fits(s, kb_id)
                    if need is None:
                        return
                    head = self.changes.head(s)  # a read-only session: never None
                    kb = self._build(s, kb_id, head)  # the long part: searches go on meanwhile
                with self._lock:
                    self._evict(need)
                    self._kbs[kb_id] = kb
            except Exception:  # the KB stays answered by SQL; the next search tries again
                log.exception("building the in-memory index of KB %s failed", kb_id)
            finally:
                with self._lock:
                    self._building.discard(kb_id)

        threading.Thread(target=build, name=f"{type(self).__name__}-{kb_id}", daemon=True).start()

    def _evict(self, need: int) -> None:
        used = sum(self._nbytes(kb) for kb in self._kbs.values())
        while self._kbs and used + need > self.max_bytes:
            _, kb = self._kbs.popitem(last=False)
            used -= self._nbytes(kb)

    def ready(self, kb_id: str) -> bool:
        """Whether the KB's index is built here (for tests and benchmarks that wait for it)."""
        with self._lock:
            return kb_id in self._kbs
