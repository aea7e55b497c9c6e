"""Scale: hybrid search latency and HNSW recall at 100k chunks, pgvector beside SQLite.

Sections (``--sections``, in order; each adds its keys to the one JSON line):

* ``search``: hybrid search latency on the **sqlite** store (sqlite-vec + FTS5) and the
  **pgvector** store (HNSW + tsvector/GIN on pgserver's PostgreSQL 16), same data, same queries;
  each also as ``-memory`` (``--stores``): the same tables searched through the store's in-memory
  indexes, as the runtime's stores are (sqlite: vectors and keywords; pgvector: keywords, BM25).
  One query = what ``services.search.retrieve`` does in hybrid mode, at the store layer: one
  ``vector_search`` and one ``keyword_search`` at depth 50, then ``fuse`` (imported from
  ``services/search.py``), top 10. The clock runs from opening ``db.read_session()`` (pool
  checkout, ``BEGIN``) to its close, as a request pays it; no embedding, no HTTP, no hydration.
  Warm-up queries first (not counted); then the two stores alternate query by query (and which one
  goes first alternates too), so both see the same machine load. p50/p99 (nearest rank), mean.
* ``recall``: recall@10 of ``PgvectorStore.vector_search`` (HNSW, ``hnsw.ef_search`` =
  max(4k, 100) as the store sets it) against the exact top 10 computed with numpy over the same
  float32 vectors, at k=10 and at the hybrid depth k=50 (its top 10), over every query (warm-up
  ones too). Target >= 0.95: the script exits 1 when the k=10 figure is below it (after
  printing everything).

* ``filters``: hybrid search with a metadata filter allowing ~0.1 %, 10 % and 90 % of the
  measured KB's chunks, beside the same queries unfiltered, per store (not ``sqlite``: its
  ``vec0`` path is the fallback). The KB's chunks are grouped into documents of 1-20 consecutive
  chunks, written to the app's tables as the pipeline writes them, each document drawing each
  filter key (true with its share). The vector half's top 10 is checked against a brute-force
  pass over the allowed chunks (``exact_top10``), and no answer may be short of 10.

* ``ingest``: ingest throughput through the HTTP API with 1, 2 and 3 Celery worker processes
  on PostgreSQL + Redis (``benchmarks/scale_ingest.py`` says how).

**What is synthetic, and why.** The embedding model does ~20 chunks/s here, so 100k real
embeddings would take 1.5 hours. So:

* texts are **real English**: sentences from the paragraphs of the Python docs
  (``/usr/share/doc/python3.11/html``, ``apt-get install python3.11-doc``); a chunk is a run of
  consecutive sentences (80-160 words, the size of a 200-token chunk) from a random place, with
  its page's ``<h1>`` as title and the nearest ``<h2>``/``<h3>`` as section. Sentences recur in
  overlapping chunks, as they do in a real corpus with boilerplate;
* vectors are **synthetic**, 384 dimensions (all-MiniLM-L6-v2), unit length, clustered by page:
  each page has a random centroid and a random 24-dimensional subspace; a chunk's vector is
  centroid + a point of that subspace (norm ~0.8) + isotropic noise (norm ~0.45), normalised.
  That gives cosines of ~0.5-0.7 within a page and ~0 across pages, close to what MiniLM gives,
  and clusters of very different sizes (pages differ in length). Clustered data with a low
  intrinsic dimension is harder for HNSW than uniform noise in a way real embeddings are;
* queries come from **held-out chunks** (generated like the others, never inserted): the vector
  is the held-out vector plus isotropic noise (norm 0.3), normalised (a paraphrase); the text is
  2-5 content words of the held-out chunk (a user's keywords).

Besides the measured KB (``--chunks``), a second KB of ``--other-kb-chunks`` (default 2% of it)
lives in the same tables, as in production where one table per dimension holds every KB: HNSW
filters by KB *after* its candidate list, so foreign rows matter (see the fallback counts).

Loading goes through ``store.upsert`` in ``--batch`` entries per write transaction, as the
pipeline writes; the pgvector store creates its HNSW index in ``ensure_schema``, so inserts
maintain it (``--pg-index incremental``, the default). ``--pg-index after`` drops the index before
loading and lets ``ensure_schema`` build it afterwards (bulk build, ``maintenance_work_mem``
raised for that session only). ``ANALYZE`` runs on PostgreSQL after loading.

    .venv/bin/python benchmarks/scale.py [--chunks 100000] [--queries 200] [--sections search,recall]
                                         [--pg-index incremental|after] [--batch 2000] [--smoke]

``--smoke`` (CI): 5,000 chunks, 30 queries, well under 2 minutes. Tables and progress go to
stderr, one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

# benchmarks/queue.py is named like the stdlib's ``queue`` module, and a script's own directory
# comes first on the import path: drop it before anything imports ``queue``.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))  # support.pg: a pgserver PostgreSQL in a temp dir
sys.path.append(str(HERE))  # scale_ingest (after the rest: see above)

from lorebase.adapters.stores.filters import Where  # noqa: E402
from lorebase.adapters.stores.pgvector import _EF_SEARCH_MIN, _EF_SEARCH_PER_RESULT, PgvectorStore  # noqa: E402
from lorebase.adapters.stores.protocol import IndexEntry, Store  # noqa: E402
from lorebase.adapters.stores.sqlite import SqliteStore  # noqa: E402
from lorebase.adapters.stores.terms import STOP_WORDS  # noqa: E402
from lorebase.db.engine import Database  # noqa: E402
from lorebase.db.migrate import upgrade  # noqa: E402
from lorebase.services.search import Ranked, fuse  # noqa: E402
from support.documents import describe  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html")
DIMENSIONS = 384
KB = "kb-scale"
OTHER_KB = "kb-other"
HYBRID_DEPTH = 50  # services.search.retrieve: depth = max(top_k, 50) in hybrid mode
TOP_K = 10
RECALL_TARGET = 0.95
SUBSPACE, LOW_NORM, ISO_NORM, QUERY_NOISE = 24, 0.8, 0.45, 0.3
#: ``sqlite-memory``: the same SQLite file and tables as ``sqlite``, searched through the store's
#: in-memory indexes (``vector_cache.py``, ``keyword_cache.py``: the embedded default);
#: ``sqlite``: ``vec0`` scans and FTS5 queries; ``pgvector-memory``: the same PostgreSQL table as
#: ``pgvector``, its keywords ranked from the in-memory index (``keyword_cache.py`` over the
#: tsvectors: the runtime's default); ``pgvector``: ``ts_rank_cd`` over the GIN matches
STORES = ("sqlite", "sqlite-memory", "pgvector", "pgvector-memory")
#: the cache's budget in the benchmark: enough for the measured KB at 1M chunks
MEMORY_CACHE_BYTES = 4 * 1024**3
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[a-z]{4,}")


def log(*args: Any) -> None:
    print("[scale]", *args, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (as the other benchmarks)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


# -- data -------------------------------------------------------------------------------------------
@dataclass
class Corpus:
    texts: list[str]
    titles: list[str]
    sections: list[str]
    vectors: np.ndarray  # (n, DIMENSIONS) float32, unit rows
    kb_ids: list[str]
    query_vectors: np.ndarray
    query_texts: list[str]

    def kb_rows(self, kb_id: str) -> np.ndarray:
        return np.array([i for i, kb in enumerate(self.kb_ids) if kb == kb_id])


def doc_sentences(docs: Path) -> tuple[list[str], list[str], list[str], list[int]]:
    """Sentences of every ``<p>`` of the docs, with their page title, section and page number."""
    import lxml.html

    sentences: list[str] = []
    titles: list[str] = []
    sections: list[str] = []
    pages: list[int] = []
    for page, path in enumerate(sorted(docs.rglob("*.html"))):
        title = section = ""
        for el in lxml.html.parse(str(path)).iter("h1", "h2", "h3", "p"):
            words = " ".join(el.text_content().replace("¶", " ").split())
            if el.tag == "h1":
                title = section = words
            elif el.tag in ("h2", "h3"):
                section = words
            else:
                for sentence in _SENTENCE.split(words):
                    if 4 <= sentence.count(" ") < 80:
                        sentences.append(sentence)
                        titles.append(title)
                        sections.append(section)
                        pages.append(page)
    return sentences, titles, sections, pages


def clustered_vectors(rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
    """Unit vectors: per cluster a random centroid + a point of a random subspace + isotropic noise."""
    out = np.empty((len(clusters), DIMENSIONS), dtype=np.float32)
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        centroid = rng.normal(size=DIMENSIONS)
        centroid /= np.linalg.norm(centroid)
        basis = rng.normal(size=(SUBSPACE, DIMENSIONS)) / math.sqrt(DIMENSIONS)  # rows of norm ~1
        low = rng.normal(size=(len(rows), SUBSPACE)) * (LOW_NORM / math.sqrt(SUBSPACE)) @ basis
        iso = rng.normal(size=(len(rows), DIMENSIONS)) * (ISO_NORM / math.sqrt(DIMENSIONS))
        out[rows] = centroid + low + iso
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def build_corpus(chunks: int, other: int, queries: int, seed: int, docs: Path) -> Corpus:
    rng = np.random.default_rng(seed)
    sentences, titles, sections, pages = doc_sentences(docs)
    total = chunks + other + queries
    starts = rng.integers(0, len(sentences) - 40, size=total)
    lengths = rng.integers(80, 161, size=total)
    texts = []
    for start, words in zip(starts, lengths, strict=True):
        parts, n, i = [], 0, int(start)
        while n < words:
            parts.append(sentences[i])
            n += sentences[i].count(" ") + 1
            i += 1
        texts.append(" ".join(parts))
    vectors = clustered_vectors(rng, np.asarray(pages)[starts])
    query_vectors = vectors[-queries:] + rng.normal(size=(queries, DIMENSIONS)) * (
        QUERY_NOISE / math.sqrt(DIMENSIONS)
    )
    query_texts = []
    for t in texts[-queries:]:
        words = [w for w in dict.fromkeys(_WORD.findall(t.lower())) if w not in STOP_WORDS]
        query_texts.append(
            " ".join(rng.choice(words, size=min(len(words), int(rng.integers(2, 6))), replace=False))
        )
    return Corpus(
        texts=texts[: chunks + other],
        titles=[titles[s] for s in starts[: chunks + other]],
        sections=[sections[s] for s in starts[: chunks + other]],
        vectors=vectors[: chunks + other],
        kb_ids=[KB] * chunks + [OTHER_KB] * other,
        query_vectors=(query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)).astype(
            np.float32
        ),
        query_texts=query_texts,
    )


# -- stores -----------------------------------------------------------------------------------------
class CountingPgvectorStore(PgvectorStore):
    """The real store, counting its exact (non-index) searches: HNSW came back short of k rows."""

    exact_searches = 0

    def _exact(self, *args: Any, **kwargs: Any) -> Any:
        self.exact_searches += 1
        return super()._exact(*args, **kwargs)


@dataclass
class Loaded:
    db: Database
    store: Store
    figures: dict[str, Any] = field(default_factory=dict)


def load(db: Database, store: Store, corpus: Corpus, batch: int) -> float:
    """Upsert every chunk through the store, ``batch`` per write transaction; returns seconds."""
    n = len(corpus.texts)
    started = last = time.perf_counter()
    for lo in range(0, n, batch):
        entries = [
            IndexEntry(
                pk=i + 1,
                kb_id=corpus.kb_ids[i],
                vector=corpus.vectors[i],
                text=corpus.texts[i],
                title=corpus.titles[i],
                section=corpus.sections[i],
            )
            for i in range(lo, min(n, lo + batch))
        ]
        with db.session() as s:
            store.upsert(s, entries)
        if time.perf_counter() - last > 30 or lo + batch >= n:
            last = time.perf_counter()
            done = min(n, lo + batch)
            log(f"  {store.name}: {done:,}/{n:,} rows, {done / (last - started):,.0f} rows/s")
    return time.perf_counter() - started


def open_sqlite(stack: ExitStack, corpus: Corpus, args: argparse.Namespace) -> Loaded:
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="lorebase-scale-"))
    db = Database(f"sqlite:///{tmp}/scale.db")
    stack.callback(db.dispose)
    store = SqliteStore(DIMENSIONS)
    upgrade(db.engine)  # the app's tables: the filters section describes the chunks' documents there
    with db.session() as s:
        store.ensure_schema(s)
    seconds = load(db, store, corpus, args.batch)
    size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    return Loaded(db, store, {"load_seconds": round(seconds, 1), "size_mb": round(size / 2**20)})


def open_pgvector(stack: ExitStack, corpus: Corpus, args: argparse.Namespace) -> Loaded:
    from support.pg import running_pgserver

    db = Database(stack.enter_context(running_pgserver()))
    stack.callback(db.dispose)
    store = CountingPgvectorStore(DIMENSIONS)
    hnsw = f"ix_{store.table_name}_hnsw"
    upgrade(db.engine)
    with db.session() as s:
        store.ensure_schema(s)
        if args.pg_index == "after":
            s.execute(text(f"DROP INDEX {hnsw}"))
    figures: dict[str, Any] = {
        "index": args.pg_index,
        "load_seconds": round(load(db, store, corpus, args.batch), 1),
    }
    if args.pg_index == "after":
        started = time.perf_counter()
        with db.session() as s:
            s.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            store.ensure_schema(s)  # creates the missing HNSW index over the loaded rows
        figures["index_build_seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    with db.session() as s:
        s.execute(text(f"ANALYZE {store.table_name}"))
    figures["analyze_seconds"] = round(time.perf_counter() - started, 1)
    with db.read_session() as s:
        figures["table_mb"] = round(
            s.execute(text(f"SELECT pg_total_relation_size('{store.table_name}')")).scalar_one() / 2**20
        )
        figures["hnsw_mb"] = round(s.execute(text(f"SELECT pg_relation_size('{hnsw}')")).scalar_one() / 2**20)
        figures["shared_buffers"] = s.execute(text("SHOW shared_buffers")).scalar_one()
        figures["pgvector_version"] = s.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar_one()
    return Loaded(db, store, figures)


class Bench:
    """What the sections share: the arguments, the corpus and the loaded stores, built on first use."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.args = args
        self._stack = stack
        self._corpus: Corpus | None = None
        self._stores: dict[str, Loaded] = {}

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            a = self.args
            started = time.perf_counter()
            self._corpus = build_corpus(a.chunks, a.other_kb_chunks, a.queries + a.warm_up, a.seed, a.docs)
            log(f"corpus: {len(self._corpus.texts):,} chunks, {time.perf_counter() - started:.1f} s to build")
        return self._corpus

    def store(self, name: str) -> Loaded:
        if name == "sqlite-memory" and name not in self._stores:
            plain = self.store("sqlite")  # the same file, another store object with its cache on
            store = SqliteStore(
                DIMENSIONS, cache_bytes=MEMORY_CACHE_BYTES, keyword_cache_bytes=MEMORY_CACHE_BYTES
            )
            started = time.perf_counter()
            with plain.db.read_session() as s:  # the first search loads the KB into memory
                store.vector_search(s, KB, self.corpus.query_vectors[0], 1)
            vectors = time.perf_counter() - started
            with plain.db.read_session() as s:
                store.keyword_search(s, KB, self.corpus.query_texts[0], 1)
            keywords = time.perf_counter() - started - vectors
            figures = {
                "cache_load_seconds": round(vectors, 1),
                "keyword_load_seconds": round(keywords, 1),
                "keyword_index_mb": round(sum(kb.nbytes for kb in store.keywords._kbs.values()) / 2**20),
            }
            self._stores[name] = Loaded(plain.db, store, figures)
            log(f"{name}: {self._stores[name].figures}")
        if name == "pgvector-memory" and name not in self._stores:
            plain = self.store("pgvector")  # the same table, another store object with its index on
            pg = CountingPgvectorStore(DIMENSIONS, keyword_cache_bytes=MEMORY_CACHE_BYTES)
            started = time.perf_counter()
            with plain.db.read_session() as s:  # the first keyword search builds the KB's index
                pg.keyword_search(s, KB, self.corpus.query_texts[0], 1)
            figures = {
                "keyword_load_seconds": round(time.perf_counter() - started, 1),
                "keyword_index_mb": round(sum(kb.nbytes for kb in pg.keywords._kbs.values()) / 2**20),
            }
            with plain.db.read_session() as s:
                figures["keyword_index_estimate_mb"] = round(pg.keywords._estimate(s, KB) / 2**20)
            self._stores[name] = Loaded(plain.db, pg, figures)
            log(f"{name}: {self._stores[name].figures}")
        if name not in self._stores:
            log(f"loading {name} ...")
            opener = open_sqlite if name == "sqlite" else open_pgvector
            self._stores[name] = opener(self._stack, self.corpus, self.args)
            log(f"{name}: {self._stores[name].figures}")
        return self._stores[name]


# -- sections ---------------------------------------------------------------------------------------
def hybrid(
    loaded: Loaded, vector: np.ndarray, query: str, where: Where | None = None
) -> tuple[float, float, float, list[Ranked]]:
    """One hybrid query as ``retrieve`` runs it; returns (total, vector, keyword) seconds and the top 10."""
    started = time.perf_counter()
    with loaded.db.read_session() as s:
        hits = loaded.store.vector_search(s, KB, vector, HYBRID_DEPTH, where)
        t_vec = time.perf_counter()
        words = loaded.store.keyword_search(s, KB, query, HYBRID_DEPTH, where)
        t_kw = time.perf_counter()
        lists = [[Ranked(h.pk, h.score) for h in hits], [Ranked(h.pk, h.score) for h in words]]
        ranked = fuse(lists)[:TOP_K]
    return time.perf_counter() - started, t_vec - started, t_kw - t_vec, ranked


def section_search(bench: Bench) -> dict[str, Any]:
    corpus, warm, stores = bench.corpus, bench.args.warm_up, bench.args.stores
    loaded = {name: bench.store(name) for name in stores}
    counting = {n: lo.store for n, lo in loaded.items() if isinstance(lo.store, CountingPgvectorStore)}
    for i in range(warm):
        for name in stores:
            hybrid(loaded[name], corpus.query_vectors[i], corpus.query_texts[i])
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in stores}
    fell_back: dict[str, list[bool]] = {n: [] for n in counting}  # per query: the vector search went exact
    queries = 0
    for i in range(warm, len(corpus.query_texts)):
        queries += 1
        for name in stores if i % 2 else stores[::-1]:
            pg = counting.get(name)
            before = pg.exact_searches if pg is not None else 0
            total, vec, kw, _ = hybrid(loaded[name], corpus.query_vectors[i], corpus.query_texts[i])
            times[name].append((1000 * total, 1000 * vec, 1000 * kw))
            if pg is not None:
                fell_back[name].append(pg.exact_searches > before)
    out: dict[str, Any] = {name: latency_figures(times[name]) | loaded[name].figures for name in stores}
    keys = ("p50_ms", "p99_ms", "mean_ms")
    out["queries"] = queries
    head = ("", *keys, "vector_p50_ms", "keyword_p50_ms", "exact_fallbacks", "load_seconds")
    rows = [head] + [(name, *(out[name].get(k, "") for k in head[1:])) for name in stores]
    for name in stores:
        if name != "sqlite" and "sqlite" in stores:
            ratio = {k: round(out[name][k] / out["sqlite"][k], 2) for k in keys}
            out[f"ratio_{name.replace('-', '_')}_over_sqlite"] = ratio
            rows.append((f"{name}/sqlite", *ratio.values(), "", "", "", ""))
    table(f"hybrid search, {bench.args.chunks:,} chunks, {queries} queries", rows)
    for name in counting:
        vec_ms = [t[1] for t in times[name]]
        out[name]["exact_fallbacks"] = sum(fell_back[name])
        for label, flag in (("index", False), ("exact", True)):
            part = [ms for ms, f in zip(vec_ms, fell_back[name], strict=True) if f is flag]
            out[name][f"vector_p50_ms_{label}"] = round(percentile(part, 50), 2) if part else None
        log(
            f"{name} vector_search p50: {out[name]['vector_p50_ms_index']} ms from the HNSW index, "
            f"{out[name]['vector_p50_ms_exact']} ms when it came back short and the store went exact"
        )
    if "sqlite-memory" in loaded and "sqlite" in loaded:  # from memory vs. vec0's and FTS5's answers
        same_vec = same_kw = 0
        overlap: list[float] = []
        for i in range(warm, len(corpus.query_texts)):
            q, words = corpus.query_vectors[i], corpus.query_texts[i]
            answers = {}
            for n in ("sqlite", "sqlite-memory"):
                with loaded[n].db.read_session() as s:
                    vec = [h.pk for h in loaded[n].store.vector_search(s, KB, q, TOP_K)]
                    kw = [h.pk for h in loaded[n].store.keyword_search(s, KB, words, HYBRID_DEPTH)]
                answers[n] = (vec, kw)
            (vec_disk, kw_disk), (vec_mem, kw_mem) = answers["sqlite"], answers["sqlite-memory"]
            same_vec += vec_disk == vec_mem
            same_kw += kw_disk[:TOP_K] == kw_mem[:TOP_K]
            overlap.append(len(set(kw_disk) & set(kw_mem)) / max(1, len(kw_disk)))
        out["sqlite-memory"]["same_top10_as_vec0"] = f"{same_vec}/{queries}"
        # the in-memory BM25 uses the KB's own statistics (FTS5: the whole table's, here with
        # the other KB in it), so rankings may differ a little
        out["sqlite-memory"]["same_keyword_top10_as_fts5"] = f"{same_kw}/{queries}"
        out["sqlite-memory"]["keyword_top50_overlap_with_fts5"] = round(statistics.fmean(overlap), 3)
    return {"search": out}


# -- filters ----------------------------------------------------------------------------------------
#: the metadata keys the ``filters`` section gives the measured KB's documents, and the share of
#: the documents each is true on
FILTER_SHARES = {"share_0_1": 0.001, "share_10": 0.10, "share_90": 0.90}
#: documents are runs of 1 to this many consecutive chunks of the measured KB
MAX_CHUNKS_PER_DOCUMENT = 20


def describe_documents(db: Database, corpus: Corpus, seed: int) -> dict[str, np.ndarray]:
    """Put the measured KB's documents in the app's tables as the pipeline writes them (a
    workspace, the KB, documents with metadata, chunk rows naming their document) and return, per
    filter key, the pks of the chunks it allows."""
    rng = np.random.default_rng(seed + 7)
    rows = corpus.kb_rows(KB)
    docs: dict[str, tuple[dict[str, Any], list[int]]] = {}
    allowed: dict[str, list[int]] = {key: [] for key in FILTER_SHARES}
    at = 0
    while at < len(rows):
        run = rows[at : at + int(rng.integers(1, MAX_CHUNKS_PER_DOCUMENT + 1))]
        at += len(run)
        meta = {key: bool(rng.random() < share) for key, share in FILTER_SHARES.items()}
        pks = [int(row) + 1 for row in run]  # as load() numbers them
        docs[f"doc-{len(docs):07d}"] = (meta, pks)
        for key in FILTER_SHARES:
            if meta[key]:
                allowed[key].extend(pks)
    describe(db, docs, kb_id=KB, workspace_id="ws-scale")
    with db.session() as s:  # as after the store's load: the planner's statistics of the new rows
        s.execute(text("ANALYZE documents" if db.engine.dialect.name == "postgresql" else "ANALYZE"))
        if db.engine.dialect.name == "postgresql":
            s.execute(text("ANALYZE chunks"))
    log(
        f"documents: {len(docs):,} for {len(rows):,} chunks; allowed per key: "
        + ", ".join(f"{k} {len(v):,}" for k, v in allowed.items())
    )
    return {key: np.asarray(v, dtype=np.int64) for key, v in allowed.items()}


def section_filters(bench: Bench) -> dict[str, Any]:
    """Hybrid search with a metadata filter allowing ~0.1 %, 10 % and 90 % of the KB's chunks,
    beside the same queries unfiltered, per store; and whether the vector half returned exactly
    the top 10 a brute-force pass over the allowed chunks gives, never a short list. The sqlite
    store keeps the answers of recent filters; they are dropped before each query here, so what
    is measured is a filter computed afresh (its vector and keyword halves share one)."""
    corpus, args = bench.corpus, bench.args
    stores = [n for n in args.stores if n != "sqlite"] or args.stores  # vec0 + a pk list: the old path
    loaded = {name: bench.store(name) for name in stores}
    allowed: dict[str, np.ndarray] = {}
    for db in {id(x.db): x.db for x in loaded.values()}.values():
        allowed = describe_documents(db, corpus, args.seed)
    settings: list[tuple[str, Where | None]] = [("none", None)]
    settings += [(key, Where.parse({key: True})) for key in FILTER_SHARES]
    first = args.warm_up
    for i in range(first):  # warm-up: every store, every filter (the in-memory filter is built here)
        for name in stores:
            for _, where in settings:
                hybrid(loaded[name], corpus.query_vectors[i], corpus.query_texts[i], where)
    times = {(name, label): [] for name in stores for label, _ in settings}
    halves: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in times}
    exact = {(name, label): 0 for name in stores for label, _ in settings if label != "none"}
    short = dict.fromkeys(exact, 0)
    queries = 0
    for i in range(first, len(corpus.query_texts)):
        queries += 1
        q, words = corpus.query_vectors[i], corpus.query_texts[i]
        for name in stores if i % 2 else stores[::-1]:
            for label, where in settings if i % 2 else settings[::-1]:
                if isinstance(loaded[name].store, SqliteStore):  # each filter computed afresh
                    loaded[name].store.filters.forget_answers()
                total, vec, kw, _ = hybrid(loaded[name], q, words, where)
                times[(name, label)].append(1000 * total)
                halves[(name, label)].append((1000 * vec, 1000 * kw))
        for label, where in settings[1:]:  # exactness, outside the clock
            pks = allowed[label]
            truth = pks[np.argsort(-(corpus.vectors[pks - 1] @ q), kind="stable")[:TOP_K]].tolist()
            for name in stores:
                with loaded[name].db.read_session() as s:
                    got = [h.pk for h in loaded[name].store.vector_search(s, KB, q, TOP_K, where)]
                exact[(name, label)] += got == truth
                short[(name, label)] += len(got) < min(TOP_K, len(pks))
    out: dict[str, Any] = {"queries": queries, "allowed_chunks": {k: len(v) for k, v in allowed.items()}}
    rows: list[tuple[Any, ...]] = [
        (
            "store",
            "filter",
            "allowed",
            "p50_ms",
            "p99_ms",
            "x unfiltered",
            "vector",
            "keyword",
            "exact top10",
            "short",
        )
    ]
    for name in stores:
        base = percentile(times[(name, "none")], 50)
        out[name] = {}
        for label, _ in settings:
            p50, p99 = percentile(times[(name, label)], 50), percentile(times[(name, label)], 99)
            fig: dict[str, Any] = {
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "over_unfiltered_p50": round(p50 / base, 2),
                "vector_p50_ms": round(percentile([v for v, _ in halves[(name, label)]], 50), 2),
                "keyword_p50_ms": round(percentile([k for _, k in halves[(name, label)]], 50), 2),
            }
            if label != "none":
                fig |= {
                    "exact_top10": f"{exact[(name, label)]}/{queries}",
                    "short_lists": short[(name, label)],
                }
            out[name][label] = fig
            rows.append(
                (
                    name,
                    label,
                    len(allowed[label]) if label != "none" else "all",
                    fig["p50_ms"],
                    fig["p99_ms"],
                    fig["over_unfiltered_p50"],
                    fig["vector_p50_ms"],
                    fig["keyword_p50_ms"],
                    fig.get("exact_top10", ""),
                    fig.get("short_lists", ""),
                )
            )
    table(f"filtered hybrid search, {args.chunks:,} chunks, {queries} queries", rows)
    return {"filters": out}


def latency_figures(times: list[tuple[float, float, float]]) -> dict[str, Any]:
    """p50/p99 (nearest rank) and mean of the totals, p50 of each part; times in ms."""
    total = [t[0] for t in times]
    return {
        "p50_ms": round(percentile(total, 50), 2),
        "p99_ms": round(percentile(total, 99), 2),
        "mean_ms": round(statistics.fmean(total), 2),
        "vector_p50_ms": round(percentile([t[1] for t in times], 50), 2),
        "keyword_p50_ms": round(percentile([t[2] for t in times], 50), 2),
    }


def recall_at_k(
    db: Database, store: CountingPgvectorStore, queries: np.ndarray, exact: list[set[int]], k: int
) -> dict[str, Any]:
    """Recall of the top 10 of ``vector_search(k)``; "index only" leaves out the exact fallbacks."""
    found, index_found, index_queries = 0, 0, 0
    for q, truth in zip(queries, exact, strict=True):
        before = store.exact_searches
        with db.read_session() as s:
            hit = len({h.pk for h in store.vector_search(s, KB, q, k)[:TOP_K]} & truth)
        found += hit
        if store.exact_searches == before:
            index_found, index_queries = index_found + hit, index_queries + 1
    return {
        "ef_search": max(k * _EF_SEARCH_PER_RESULT, _EF_SEARCH_MIN),
        "recall_at_10": round(found / (TOP_K * len(queries)), 4),
        "index_recall_at_10": round(index_found / (TOP_K * index_queries), 4) if index_queries else None,
        "exact_fallbacks": len(queries) - index_queries,
    }


def section_recall(bench: Bench) -> dict[str, Any]:
    corpus = bench.corpus
    loaded = bench.store("pgvector")
    store = loaded.store
    assert isinstance(store, CountingPgvectorStore)
    rows = corpus.kb_rows(KB)
    matrix = corpus.vectors[rows]
    exact = [
        set((rows[np.argpartition(-(matrix @ q), TOP_K)[:TOP_K]] + 1).tolist()) for q in corpus.query_vectors
    ]
    out: dict[str, Any] = {"ef_search_min": _EF_SEARCH_MIN}
    for k in (TOP_K, HYBRID_DEPTH):
        out[f"k{k}"] = recall_at_k(loaded.db, store, corpus.query_vectors, exact, k)
    gate = out[f"k{TOP_K}"]["index_recall_at_10"] or out[f"k{TOP_K}"]["recall_at_10"]
    out.update(queries=len(corpus.query_vectors), target=RECALL_TARGET, meets_target=gate >= RECALL_TARGET)
    table(
        f"pgvector HNSW recall@10 vs exact (numpy), {len(corpus.query_vectors)} queries",
        [("search k", "ef_search", "recall@10", "index only", "exact fallbacks")]
        + [
            (
                k,
                out[f"k{k}"]["ef_search"],
                out[f"k{k}"]["recall_at_10"],
                out[f"k{k}"]["index_recall_at_10"],
                out[f"k{k}"]["exact_fallbacks"],
            )
            for k in (TOP_K, HYBRID_DEPTH)
        ],
    )
    log(f"recall@10 {gate} (target {RECALL_TARGET}): {'met' if out['meets_target'] else 'NOT MET'}")
    return {"recall": out}


def table(title: str, rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    log(title)
    for r in rows:
        log("  " + "  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)))


def section_ingest(bench: Bench) -> dict[str, Any]:
    import scale_ingest

    from support.pg import running_pgserver

    with running_pgserver() as server:
        figures = scale_ingest.run(server, bench.args.ingest_docs, log)
    table(
        f"ingest: {figures['documents']} documents, Celery workers on PostgreSQL + Redis",
        [("workers", "seconds", "docs/s", "vs 1")]
        + [
            (n, r["seconds"], r["docs_per_second"], r["ratio_to_one"])
            for n, r in figures["by_workers"].items()
        ],
    )
    return {"ingest": figures}


SECTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "ingest": section_ingest,
    "search": section_search,
    "recall": section_recall,
    "filters": section_filters,
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sections", default="ingest,search,recall", help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    ap.add_argument(
        "--ingest-docs", type=int, default=None, help="documents per ingest run (240; --smoke 40)"
    )
    ap.add_argument(
        "--chunks", type=int, default=None, help="chunks in the measured KB (100000; --smoke 5000)"
    )
    ap.add_argument(
        "--other-kb-chunks", type=int, default=None, help="chunks of a second KB (default 2%% of --chunks)"
    )
    ap.add_argument("--queries", type=int, default=None, help="measured queries (200; --smoke 30)")
    ap.add_argument("--warm-up", type=int, default=None, help="warm-up queries, not counted (20; --smoke 5)")
    ap.add_argument("--batch", type=int, default=2000, help="entries per write transaction (2000)")
    ap.add_argument(
        "--pg-index",
        choices=("incremental", "after"),
        default="incremental",
        help="when the HNSW index is built",
    )
    ap.add_argument(
        "--stores", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)} (search section)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--docs", type=Path, default=DOCS, help=f"HTML docs to take sentences from ({DOCS})")
    ap.add_argument("--smoke", action="store_true", help="a quick run: 5,000 chunks, 30 queries")
    args = ap.parse_args()
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if unknown := [s for s in args.sections if s not in SECTIONS]:
        ap.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if unknown := [s for s in args.stores if s not in STORES]:
        ap.error(f"unknown stores {unknown}; known: {', '.join(STORES)}")
    args.chunks = args.chunks or (5000 if args.smoke else 100_000)
    args.other_kb_chunks = args.chunks // 50 if args.other_kb_chunks is None else args.other_kb_chunks
    args.queries = args.queries or (30 if args.smoke else 200)
    args.ingest_docs = args.ingest_docs or (40 if args.smoke else 240)
    args.warm_up = (5 if args.smoke else 20) if args.warm_up is None else args.warm_up
    if not args.docs.is_dir():
        ap.error(f"{args.docs} is missing: apt-get install python3.11-doc, or --docs DIR")
    return args


def main() -> int:
    args = parse_args()
    log(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    out: dict[str, Any] = {
        "benchmark": "scale",
        "chunks": args.chunks,
        "other_kb_chunks": args.other_kb_chunks,
    }
    with ExitStack() as stack:
        bench = Bench(args, stack)
        for name in args.sections:
            out.update(SECTIONS[name](bench))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out.update(
        load_average=[round(x, 2) for x in os.getloadavg()], smoke=args.smoke, peak_rss_mb=round(peak / 1024)
    )
    print(json.dumps(out), flush=True)
    return 0 if out.get("recall", {}).get("meets_target", True) else 1


if __name__ == "__main__":
    sys.exit(main())
