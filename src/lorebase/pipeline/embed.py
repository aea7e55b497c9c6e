"""The embed stage: vectors for texts through a cache keyed by (model, text hash).

Unchanged text is never embedded twice: the cache is consulted first and only misses reach
the model. The hash covers the workspace as well as the text, so workspaces never share cache
rows: how fast a text is embedded cannot tell one tenant that another already holds it. New cache rows are returned to the caller so they commit in the same transaction
as the vectors they describe.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from lorebase.adapters.embedders.protocol import Embedder
from lorebase.db.models import EmbeddingCache


class _Tally:
    """A thread-safe running count (texts sent to the model by this process)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


#: texts this process sent to an embedding model: the fault suite checks that pause/resume and
#: retries never embed a chunk twice
TEXTS_EMBEDDED = _Tally()


def text_hash(text: str, scope: str) -> str:
    """The cache key of ``text`` within ``scope`` (a workspace id)."""
    return hashlib.sha256(scope.encode("utf-8") + b"\x00" + text.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Embedded:
    vectors: np.ndarray
    #: (text hash, vector bytes) for texts the model embedded now (cache misses)
    new_cache_rows: list[tuple[str, bytes]]
    #: index into the input of each text the model embedded now
    encoded: list[int]


def cached_vectors(session: Session, model_id: str, texts: list[str], scope: str) -> dict[str, bytes]:
    """Cache rows for these texts in ``scope``, by text hash (a short read; no model call)."""
    unique = list(dict.fromkeys(text_hash(t, scope) for t in texts))
    cached: dict[str, bytes] = {}
    for i in range(0, len(unique), 500):
        rows = session.execute(
            select(EmbeddingCache.text_hash, EmbeddingCache.vector).where(
                EmbeddingCache.model_id == model_id, EmbeddingCache.text_hash.in_(unique[i : i + 500])
            )
        ).all()
        cached.update({r[0]: r[1] for r in rows})
    return cached


def embed_with_cache(embedder: Embedder, texts: list[str], cached: dict[str, bytes], scope: str) -> Embedded:
    """Vectors for ``texts``: cached ones reused, the rest (each distinct text once) from the model.

    Runs outside any transaction: encoding takes seconds and must not pin a database snapshot.
    """
    hashes = [text_hash(t, scope) for t in texts]
    vectors = np.zeros((len(texts), embedder.dimensions), dtype=np.float32)
    misses: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        if h in cached:
            vectors[i] = np.frombuffer(cached[h], dtype=np.float32)
        else:
            misses.setdefault(h, []).append(i)
    new_rows: list[tuple[str, bytes]] = []
    encoded: list[int] = []
    if misses:
        order = list(misses)
        fresh = embedder.embed([texts[misses[h][0]] for h in order])
        TEXTS_EMBEDDED.add(len(order))
        for h, vec in zip(order, fresh, strict=True):
            for i in misses[h]:
                vectors[i] = vec
            encoded.append(misses[h][0])
            new_rows.append((h, np.asarray(vec, dtype=np.float32).tobytes()))
    return Embedded(vectors=vectors, new_cache_rows=new_rows, encoded=encoded)
