"""Change logs: which entries of which KB changed, read by the in-memory indexes of a process.

``ChangeLog`` is the sqlite store's, ``PgChangeLog`` the pgvector store's (below); both are
written in the same transaction as the entries they name, and both give a reader the same three
calls (:class:`Changes`): ``head`` (where the session's snapshot stands), ``behind`` (whether an
index at one position may lack changes another has) and ``since`` (the pks to re-read).

**The sqlite store's log**, in commit order.

Every write of the store (``upsert``, ``delete``, ``delete_kb``) appends ``(kb_id, pk)`` rows to
``vec_changes_<dim>`` in the same transaction as the vectors and keywords (``pk`` -1: the whole
KB went). The in-memory indexes of a process (``vector_cache.py``, ``keyword_cache.py``) remember
the last change they applied, read at each search whether the log has moved (one indexed lookup),
and re-read only the entries that changed. A crash between writes cannot desynchronise anything:
the log and the entries commit together, and a process that restarts builds its indexes from the
file. Another process writing is seen at the next search.

The log is pruned by the writers to its newest :data:`KEEP_CHANGES` rows; an index that fell
further behind than that reloads its KB in full.

**The pgvector store's log** (``pgvector_changes_<dim>``), where ``seq`` order is *not* commit
order: transaction A takes seq 10, B takes 11 and commits first; a reader that saw 11 and
remembered "up to 11" would never see 10. So each change row carries its transaction's id
(``xid``, ``pg_current_xact_id()``), and a position is a *snapshot* (``pg_current_snapshot()``:
xmin, xmax and the transactions in progress). The changes an index at snapshot P lacks are
exactly those whose transaction P does not see: ``xid >= xmin(P) AND NOT
pg_visible_in_snapshot(xid, P)`` (every transaction below ``xmin(P)`` had ended when P was taken,
so its changes were visible in P). An index moves to the snapshot taken *before* it read the log
and the rows (``head``); those reads see that snapshot or a later one, so a change they see
beyond it is read again next time, which is idempotent (a changed pk's current row is re-read).
A session that has written (uncommitted changes of its own) gets no position: it sees rows no
other session sees, and the shared index must not learn from them.

Pruning keeps the newest :data:`KEEP_CHANGES` rows too, and raises a watermark (the largest
``xid`` it deleted, ``pgvector_changes_<dim>_pruned``) in the same transaction: an index whose
snapshot's ``xmin`` is at or below it may have lost a change, and reloads its KB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.orm import Session

#: change-log rows the writers keep (older ones are pruned; an index behind them reloads in full)
KEEP_CHANGES = 200_000
#: how often (in change-log rows) a writer prunes the log
PRUNE_EVERY = 1_000
#: a ``pk`` in the change log that means "every entry of the KB was removed"
WHOLE_KB = -1


class Changes(Protocol):
    """What ``memory_index.PerKbIndex`` reads; a position is opaque to it."""

    def head(self, session: Session) -> Any:
        """Where ``session``'s snapshot stands; None: the index must not be used in it."""
        ...

    def behind(self, position: Any, head: Any) -> bool:
        """Whether an index at ``position`` may lack changes visible at ``head``."""
        ...

    def since(self, session: Session, kb_id: str, position: Any, head: Any) -> set[int] | None:
        """The pks of ``kb_id`` to re-read to bring an index at ``position`` up to ``head`` (or
        later); None: reload the KB in full."""
        ...


class ChangeLog:
    """SQLite has one writer at a time, so ``seq`` order is commit order: a position is the last
    ``seq`` applied."""

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

    def behind(self, position: int, head: int) -> bool:
        return position < head

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


class PgChangeLog:
    """The pgvector store's change log (see the module docstring): positions are snapshots."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.pruned = f"{table}_pruned"

    def schema(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.table} (seq bigserial PRIMARY KEY, "
            "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), kb_id text NOT NULL, pk bigint NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS ix_{self.table}_kb ON {self.table}(kb_id, xid)",
            f"CREATE TABLE IF NOT EXISTS {self.pruned} (one boolean PRIMARY KEY CHECK (one), xid xid8 NOT NULL)",
            f"INSERT INTO {self.pruned} VALUES (true, '0') ON CONFLICT DO NOTHING",
        ]

    def record(self, session: Session, changes: Sequence[tuple[str, int]]) -> None:
        """Append ``(kb_id, pk)`` changes in the caller's transaction; prune now and then."""
        if not changes:
            return
        session.execute(
            text(
                f"INSERT INTO {self.table}(kb_id, pk) "
                "SELECT * FROM unnest(CAST(:kbs AS text[]), CAST(:pks AS bigint[]))"
            ),
            {"kbs": [kb for kb, _ in changes], "pks": [int(pk) for _, pk in changes]},
        )
        last = int(
            session.execute(
                text(f"SELECT currval(pg_get_serial_sequence('{self.table}', 'seq'))")
            ).scalar_one()
        )
        if last % PRUNE_EVERY < len(changes):  # now and then, not on every write
            session.execute(
                text(
                    f"WITH gone AS (DELETE FROM {self.table} WHERE seq <= :s RETURNING xid) "
                    f"UPDATE {self.pruned} SET xid = greatest(xid, (SELECT max(xid) FROM gone)) "
                    "WHERE EXISTS (SELECT FROM gone)"
                ),
                {"s": last - KEEP_CHANGES},
            )

    def head(self, session: Session) -> str | None:
        """``session``'s snapshot (text); None when the session has written (see above)."""
        snapshot, own = session.execute(
            text("SELECT CAST(pg_current_snapshot() AS text), pg_current_xact_id_if_assigned() IS NOT NULL")
        ).one()
        return None if own else str(snapshot)

    def behind(self, position: str, head: str) -> bool:
        return position != head  # another snapshot: something may have committed (one query says)

    def since(self, session: Session, kb_id: str, position: str, head: str) -> set[int] | None:
        """The pks of ``kb_id`` changed by transactions snapshot ``position`` does not see; None
        when the caller must reload the KB in full (the log was pruned past ``position``, or the
        whole KB was removed). One statement: the watermark and the log in one snapshot."""
        pruned, pks = session.execute(
            text(
                f"SELECT (SELECT xid FROM {self.pruned}) >= pg_snapshot_xmin(CAST(:p AS pg_snapshot)), "
                f"ARRAY(SELECT pk FROM {self.table} WHERE kb_id = :kb "
                "AND xid >= pg_snapshot_xmin(CAST(:p AS pg_snapshot)) "
                "AND NOT pg_visible_in_snapshot(xid, CAST(:p AS pg_snapshot)))"
            ),
            {"kb": kb_id, "p": position},
        ).one()
        changed = {int(p) for p in pks}
        return None if pruned or WHOLE_KB in changed else changed
