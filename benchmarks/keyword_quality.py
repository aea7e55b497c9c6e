"""SciFact keyword-only quality at the store layer: the sqlite and pgvector stores, each ranked by
SQL (FTS5's bm25, ``ts_rank_cd``) and from the in-memory index (BM25), on the same entries.

One entry per abstract (title + text, a zero vector: only keywords are asked), the train queries,
nDCG@10 and recall@100 with ``services/evaluations.py``'s definitions. This is not ``lorebase eval`` (no
chunking, no pipeline, no embeddings): it compares the rankings with each other, cheaply (about a
minute), on a real PostgreSQL (pgserver)::

    .venv/bin/python benchmarks/keyword_quality.py [--scifact ../shared/eval/scifact]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/queue.py
sys.path.insert(0, str(HERE.parent / "tests"))  # support.pg

from lorebase.adapters.stores.pgvector import PgvectorStore  # noqa: E402
from lorebase.adapters.stores.protocol import IndexEntry, Store  # noqa: E402
from lorebase.adapters.stores.sqlite import SqliteStore  # noqa: E402
from lorebase.cli.evaluate import load_qrels  # noqa: E402
from lorebase.db.engine import Database  # noqa: E402
from lorebase.services.evaluations import ndcg_at, recall_at  # noqa: E402

KB, DIMENSIONS, BUDGET = "scifact", 8, 1024**3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scifact", type=Path, default=HERE.parent.parent / "shared" / "eval" / "scifact")
    args = ap.parse_args()
    docs = [json.loads(line) for line in (args.scifact / "corpus.jsonl").open()]
    qrels = load_qrels(str(args.scifact / "qrels-train.tsv"))
    queries = [q for q in map(json.loads, (args.scifact / "queries-train.jsonl").open()) if q["_id"] in qrels]
    entries = [
        IndexEntry(
            pk=i + 1, kb_id=KB, vector=np.ones(DIMENSIONS, np.float32), text=d["text"], title=d["title"]
        )
        for i, d in enumerate(docs)
    ]
    out: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        from support.pg import running_pgserver

        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="lorebase-kq-"))
        sqlite_db = Database(f"sqlite:///{tmp}/kq.db")
        pg_db = Database(stack.enter_context(running_pgserver()))
        stack.callback(sqlite_db.dispose)
        stack.callback(pg_db.dispose)
        stores: dict[str, tuple[Database, Store]] = {
            "sqlite (FTS5 bm25)": (sqlite_db, SqliteStore(DIMENSIONS)),
            "sqlite-memory (BM25)": (sqlite_db, SqliteStore(DIMENSIONS, keyword_cache_bytes=BUDGET)),
            "pgvector (ts_rank_cd)": (pg_db, PgvectorStore(DIMENSIONS)),
            "pgvector-memory (BM25)": (pg_db, PgvectorStore(DIMENSIONS, keyword_cache_bytes=BUDGET)),
        }
        for db in (sqlite_db, pg_db):
            store = next(s for d, s in stores.values() if d is db)
            with db.session() as s:
                store.ensure_schema(s)
                store.upsert(s, entries)
        for name, (db, store) in stores.items():
            ndcg = recall = 0.0
            for q in queries:
                with db.read_session() as s:
                    hits = store.keyword_search(s, KB, q["text"], 100)
                ranked = [docs[h.pk - 1]["_id"] for h in hits]
                ndcg += ndcg_at(ranked, qrels[q["_id"]], 10)
                recall += recall_at(ranked, qrels[q["_id"]], 100)
            out[name] = {
                "ndcg@10": round(ndcg / len(queries), 4),
                "recall@100": round(recall / len(queries), 4),
            }
            print(
                f"{name:24} nDCG@10 {out[name]['ndcg@10']:.4f}  recall@100 {out[name]['recall@100']:.4f}",
                file=sys.stderr,
            )
    print(json.dumps({"benchmark": "keyword_quality", "queries": len(queries), "docs": len(docs), **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
