"""Metadata filters of a search: what they mean, checked once, and how each store applies them.

A search's ``filters`` (``{"source_type": "web", "metadata.lang": ["en", "de"]}``) match fields
of a chunk's **document**: ``document_id``, ``external_id``, ``source_type``, ``filename``,
``media_type``, or a key of its metadata (``metadata.<key>``, or the bare key). A list means
"any of"; several keys must all match. :meth:`Where.parse` checks them (a 422 for what cannot
mean anything) and gives the :class:`Where` every store takes.

**What matches, on every store and path alike.** A document field matches when it equals one of
the values as text (``5`` matches the filename ``"5"``). A metadata key matches by JSON type and
value: a string filter matches string values, a number filter numbers (``1`` and ``1.0`` alike),
a boolean filter booleans (``true`` is not ``1``). A document without the key, or with a list or
an object there, never matches.

How a store applies them is its own business, but none materialises every allowed pk in Python
on its hot path:

* the sqlite store evaluates them in memory (``filter_cache.py``: the KB's documents' fields,
  looked up per value) and hands its vector and keyword indexes an :class:`Allowed` bitmap;
* pgvector pushes :meth:`Where.pks_query` into its SQL;
* where neither is possible (an index still being built, Chroma, Qdrant), :meth:`Where.pks`
  reads the allowed pks with SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from lorebase.db.models import Chunk, Document, split_index_key
from lorebase.errors import InvalidInput

#: the document columns a filter can name
DOC_FIELDS = {
    "document_id": Document.id,
    "external_id": Document.external_id,
    "source_type": Document.source_type,
    "filename": Document.filename,
    "media_type": Document.media_type,
}

#: a filter value, typed as JSON types compare: ("s", text), ("n", float) or ("b", bool)
Value = tuple[str, Any]


def typed(value: Any) -> Value | None:
    """A JSON value as filters compare it; None for what never matches (null, lists, objects)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One key of a filter: ``field`` (a document field, or ``metadata.<key>``) equals any of ``values``."""

    field: str
    values: tuple[Value, ...]

    @property
    def metadata_key(self) -> str | None:
        return self.field.removeprefix("metadata.") if self.field.startswith("metadata.") else None


@dataclass(frozen=True, slots=True)
class Where:
    """A checked filter: every condition must match."""

    conditions: tuple[Condition, ...]

    @classmethod
    def parse(cls, filters: Mapping[str, Any] | None) -> Where | None:
        """``filters`` as a search gets them; None when there are none. Raises InvalidInput."""
        if not filters:
            return None
        conditions = []
        for key, value in filters.items():
            values = value if isinstance(value, list) else [value]
            if not values:
                raise InvalidInput(f"filter {key!r} has an empty list")
            if not all(isinstance(v, bool | int | float | str) for v in values):
                raise InvalidInput(f"filter {key!r}: values must be strings, numbers or booleans")
            kinds = {t[0] for t in (typed(v) for v in values) if t is not None}
            if len(kinds) > 1:
                raise InvalidInput(f"filter {key!r}: values must all be strings, all numbers or all booleans")
            if key in DOC_FIELDS:
                conditions.append(Condition(key, tuple(dict.fromkeys(("s", str(v)) for v in values))))
                continue
            name = key.removeprefix("metadata.")
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                raise InvalidInput(f"unsupported filter key {key!r}")
            found = (typed(v) for v in values)
            conditions.append(Condition(f"metadata.{name}", tuple(dict.fromkeys(t for t in found if t))))
        return cls(tuple(conditions))

    # -- SQL ------------------------------------------------------------------------------------
    def clauses(self, dialect: str) -> list[Any]:
        """The conditions as SQL on ``documents``, in ``dialect`` (``sqlite`` or ``postgresql``)."""
        out: list[Any] = []
        for cond in self.conditions:
            key = cond.metadata_key
            if key is None:
                out.append(DOC_FIELDS[cond.field].in_([v for _, v in cond.values]))
                continue
            kind = cond.values[0][0]
            raw = [v for _, v in cond.values]
            if dialect == "postgresql":
                # JSONB to JSONB: equal when type and value are (numbers by value; true is not 1)
                out.append(Document.meta[key].in_([literal(v, JSONB) for v in raw]))
                continue
            # SQLite's json_extract gives true as 1: the JSON type is checked as well
            path = f'$."{key}"'
            jtype = func.json_type(Document.meta, path)
            value = func.json_extract(Document.meta, path)
            if kind == "b":
                out.append(and_(jtype.in_(["true", "false"]), value.in_([int(v) for v in raw])))
            elif kind == "n":
                out.append(and_(jtype.in_(["integer", "real"]), value.in_(raw)))
            else:
                out.append(and_(jtype == "text", value.in_(raw)))
        return out

    def pks_query(self, kb_id: str, dialect: str) -> Select[Any]:
        """The pks of the KB's embedded chunks whose document matches, as one SQL query."""
        return (
            select(Chunk.pk)
            .join(Document, Document.id == Chunk.document_id)
            .where(*indexed_chunks(kb_id), *self.clauses(dialect))
        )

    def pks(self, session: Session, kb_id: str) -> Allowed:
        """The allowed pks, read with SQL (the path of stores that cannot do better)."""
        found = session.execute(self.pks_query(kb_id, session.get_bind().dialect.name)).scalars()
        return Allowed(np.fromiter(found, dtype=np.int64))


def indexed_chunks(key: str) -> tuple[ColumnElement[bool], ...]:
    """The chunk rows whose entries a store holds under ``key`` (a KB version's index key:
    ``db.models.index_key``): that KB's embedded chunks of that version."""
    kb_id, version = split_index_key(key)
    return (Chunk.kb_id == kb_id, Chunk.version == version, Chunk.embedded.is_(True))


class Allowed:
    """A set of pks that searches may return, as a sorted array and a bitmap over its range
    (so a store's index tests its rows in one vectorised look-up, whatever the set's size)."""

    __slots__ = ("_bits", "_lo", "pks")

    def __init__(self, pks: np.ndarray | Iterable[int]) -> None:
        arr = np.asarray(pks if isinstance(pks, np.ndarray) else list(pks), dtype=np.int64)
        if len(arr) > 1 and not bool(np.all(arr[1:] > arr[:-1])):  # not already sorted and distinct
            arr = np.sort(arr)  # (np.unique takes ~20 ms on 90k sorted pks; this check, 0.03 ms)
            arr = arr[np.concatenate(([True], arr[1:] != arr[:-1]))]
        self.pks = arr
        self._lo = int(arr[0]) if len(arr) else 0
        bits = np.zeros(int(arr[-1]) - self._lo + 1 if len(arr) else 0, dtype=bool)
        bits[arr - self._lo] = True
        self._bits = bits

    def __len__(self) -> int:
        return len(self.pks)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """For each pk of ``ids``, whether it is allowed."""
        off = ids - self._lo
        inside = (off >= 0) & (off < len(self._bits))
        out = np.zeros(len(ids), dtype=bool)
        out[inside] = self._bits[off[inside]]
        return out

    def tolist(self) -> list[int]:
        return [int(p) for p in self.pks]
