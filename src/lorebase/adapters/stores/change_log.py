"""The sqlite store's change log: which entries of which KB changed, in commit order.

Every write of the store (``upsert``, ``delete``, ``delete_kb``) appends ``(kb_id, pk)`` rows to
``vec_changes_<dim>`` in the same transaction as the vectors and keywords (``pk`` -1: the whole
KB went). The in-memory indexes of a process (``vector_cache.py``, ``keyword_cache.py``) remember
the last change they applied, read at each search whether the log has moved (one indexed lookup),
and re-read only the entries that changed. A crash between writes cannot desynchronise anything:
the log and the entries commit together, and a process that restarts builds its indexes from the
file. Another process writing is seen at the next search.

The log is pruned by the writers to its newest :data:`KEEP_CHANGES` rows; an index that fell
further behind than that reloads its KB in full.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.orm import Session

#: change-log rows the writers keep (older ones are pruned; an index behind them reloads in full)
KEEP_CHANGES = 200_000
#: how often (in change-log rows) a writer prunes the log
PRUNE_EVERY = 1_000
#: a ``pk`` in the change log that means "every entry of the KB was removed"
WHOLE_KB = -1


class ChangeLog:
    def __init__(self, table: str) -> None:
        self.table = table

    def schema(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "seq INTEGER PRIMARY KEY AUTOINCREMENT, kb_id TEXT NOT NULL, pk INTEGER NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS ix_{self.table}_kb ON {self.table}(kb_id, seq)",
        ]

    def record(self, session: Session, changes: Sequence[tuple[str, int]]) -> None:
        """Append ``(kb_id, pk)`` changes in the caller's transaction; prune now and then."""
        if not changes:
            return
        session.execute(
            text(f"INSERT INTO {self.table}(kb_id, pk) VALUES (:kb, :pk)"),
            [{"kb": kb, "pk": int(pk)} for kb, pk in changes],
        )
        last = session.execute(text(f"SELECT max(seq) FROM {self.table}")).scalar() or 0
        if last % PRUNE_EVERY < len(changes):  # now and then, not on every write
            session.execute(text(f"DELETE FROM {self.table} WHERE seq <= :s"), {"s": last - KEEP_CHANGES})

    def head(self, session: Session) -> int:
        """The newest change in ``session``'s snapshot (0: none yet)."""
        return int(session.execute(text(f"SELECT max(seq) FROM {self.table}")).scalar() or 0)

    def since(self, session: Session, kb_id: str, seq: int, head: int) -> set[int] | None:
        """The pks of ``kb_id`` changed after ``seq`` up to ``head``; None when the caller must
        reload the KB in full (the log was pruned past ``seq``, or the whole KB was removed)."""
        oldest = session.execute(text(f"SELECT min(seq) FROM {self.table}")).scalar()
        if oldest is None or oldest > seq + 1:
            return None
        changed = session.execute(
            text(f"SELECT pk FROM {self.table} WHERE kb_id = :kb AND seq > :s AND seq <= :h"),
            {"kb": kb_id, "s": seq, "h": head},
        ).scalars()
        pks = {int(p) for p in changed}
        return None if WHOLE_KB in pks else pks
