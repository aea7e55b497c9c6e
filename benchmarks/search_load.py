"""Search under ingestion: concurrent searchers hammer a live server while a knowledge base ingests.

What a user of one busy server sees: searches stay correct and fast while another KB is built,
and the build is not slowed much by them. Setup: a real ``lorebase serve --workers 2`` (its
workers in their own process, the default) on a fresh data dir, an API key from ``lorebase keys
create``. A *search* KB of ``--search-docs`` SciFact abstracts is built first. Then two ingests of
``--docs`` titled abstracts each (different abstracts, so the embedding cache never helps), timed
from finalize to ``completed``:

* **alone**: nothing else runs;
* **hammered**: ``--clients`` concurrent clients (asyncio + httpx, one keep-alive connection each)
  send hybrid searches for SciFact train queries to the search KB, back to back, for the whole
  ingest, with one API key. While the server's workers run jobs it paces searches
  (``api/pacing.py``: one at a time, ``limits.search_share_while_ingesting`` of the time), and
  its per-key limit (600 searches a minute by default) answers the excess with 429, held back a
  second (``limits.reject_delay_seconds``), as it would in production; ``--unlimited`` turns the
  limit off.

Figures: ingest throughput alone and hammered (chunks/s) and their ratio; searches sent, their
p50/p99 latency (client-side, of those answered 200) and how many answered 429, 5xx or failed at the
transport. After the
run the server is stopped cleanly (SIGTERM) and the query log is read from the SQLite file: it
must hold every answered search exactly once (``query_log_rows`` == ``searches_ok`` + the two
warm-up searches, ids unique). Between the two, the script waits for the server's fp32 ONNX query
model to be built (``live_server.wait_for_query_model``), so that one-time build is not measured.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/search_load.py [--docs 150] [--search-docs 100] [--clients 20] [--unlimited] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchmarks/queue.py is named like the stdlib's ``queue`` module, and a script's own directory
# comes first on the import path: drop it before anything imports ``queue``.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402  (after the path fix above)

sys.path.append(str(Path(__file__).resolve().parent))  # live_server, after the stdlib (see above)
from live_server import live_server, percentile, wait_for_query_model  # noqa: E402

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"  # ../shared beside the repo


def log(*args: Any) -> None:
    print("[search_load]", *args, file=sys.stderr, flush=True)


def abstracts(n: int, skip: int = 0) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["title"].strip() and row["text"].strip():
                if skip:
                    skip -= 1
                    continue
                out.append({"external_id": row["_id"], "title": row["title"], "text": row["text"]})
            if len(out) == n:
                break
    return out


def queries() -> list[str]:
    with (SCIFACT / "queries-train.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def build(client: httpx.Client, name: str, docs: list[dict[str, str]]) -> tuple[str, str]:
    """Draft + records + finalize; returns (kb id, pipeline id)."""
    draft = client.post("/api/v1/kb-drafts", json={"name": name}).raise_for_status().json()["id"]
    for i in range(0, len(docs), 200):
        r = client.post(
            f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": docs[i : i + 200]}
        )
        r.raise_for_status()
    r = client.post(f"/api/v1/kb-drafts/{draft}/finalize").raise_for_status()
    return r.json()["kb_id"], r.json()["pipeline_id"]


def wait_done(client: httpx.Client, pipeline_id: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p: dict[str, Any] = client.get(f"/api/v1/pipelines/{pipeline_id}").json()
        if p["status"] not in ("queued", "running"):
            if p["status"] != "completed":
                raise SystemExit(f"pipeline {pipeline_id} ended {p['status']}: {p}")
            return p
        time.sleep(0.2)
    raise SystemExit(f"pipeline {pipeline_id} did not finish in {timeout:.0f} s")


def timed_ingest(client: httpx.Client, name: str, docs: list[dict[str, str]]) -> tuple[float, int]:
    """(seconds from finalize to completed, chunks indexed)."""
    t0 = time.perf_counter()
    _, pipeline_id = build(client, name, docs)
    done = wait_done(client, pipeline_id)
    return time.perf_counter() - t0, int(done["counts"]["chunks_indexed"])


async def hammer(
    base: str, key: str, kb_id: str, texts: list[str], clients: int, stop: asyncio.Event
) -> dict[str, Any]:
    latencies: list[float] = []  # of the searches answered 200
    statuses: dict[str, int] = {}

    async def one(i: int) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
            n = i
            while not stop.is_set():
                query = texts[n % len(texts)]
                n += clients
                t0 = time.perf_counter()
                try:
                    r = await c.post(f"/api/v1/kbs/{kb_id}/search", json={"query": query, "top_k": 10})
                    status = str(r.status_code)
                except httpx.TransportError as exc:
                    status = f"transport:{type(exc).__name__}"
                if status == "200":
                    latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    return {"latencies": latencies, "statuses": statuses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--docs", type=int, default=None, help="abstracts per timed ingest (default 150; --smoke: 10)"
    )
    ap.add_argument(
        "--search-docs",
        type=int,
        default=None,
        help="abstracts in the searched KB (default 100; --smoke: 10)",
    )
    ap.add_argument("--clients", type=int, default=20, help="concurrent searching clients (default 20)")
    ap.add_argument(
        "--unlimited",
        action="store_true",
        help="turn the per-key search limit off (default: the server's own)",
    )
    ap.add_argument("--smoke", action="store_true", help="a quick run (10 + 10 + 10 abstracts, 4 clients)")
    args = ap.parse_args()
    n_docs = args.docs or (10 if args.smoke else 150)
    n_search = args.search_docs or (10 if args.smoke else 100)
    if args.smoke:
        args.clients = min(args.clients, 4)
    texts = queries()

    with tempfile.TemporaryDirectory(prefix="lorebase-bench-search-load-") as tmp:
        # by default the server's own per-key limit holds (600 searches/minute)
        limits = {"LOREBASE_LIMITS__SEARCH_PER_MINUTE": "0"} if args.unlimited else {}
        out: dict[str, Any] = {"docs": n_docs, "search_docs": n_search, "clients": args.clients}
        # the server stops cleanly at the end of the block: the query log's queue is written
        with (
            live_server(Path(tmp) / "data", workers=2, log_dir=Path(tmp), extra_env=limits) as (base, key, _),
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client,
        ):
            search_kb, pipeline = build(client, "searched", abstracts(n_search))
            wait_done(client, pipeline)
            # the server loads its query model on the first search and builds its fp32 ONNX file
            # and the KB's in-memory indexes in the background: not part of the load measured
            client.post(f"/api/v1/kbs/{search_kb}/search", json={"query": texts[0]}).raise_for_status()
            wait_for_query_model(Path(tmp) / "data")
            client.post(f"/api/v1/kbs/{search_kb}/search", json={"query": texts[0]}).raise_for_status()
            log(f"searched KB ready ({n_search} abstracts); load {os.getloadavg()[0]:.2f}")

            alone_s, alone_chunks = timed_ingest(client, "alone", abstracts(n_docs, skip=n_search))
            log(f"ingest alone: {alone_chunks} chunks in {alone_s:.1f} s")

            async def hammered() -> tuple[float, int, dict[str, Any]]:
                stop = asyncio.Event()
                load = asyncio.create_task(hammer(base, key, search_kb, texts, args.clients, stop))
                seconds, chunks = await asyncio.to_thread(
                    timed_ingest, client, "hammered", abstracts(n_docs, skip=n_search + n_docs)
                )
                stop.set()
                return seconds, chunks, await load

            hammer_s, hammer_chunks, searched = asyncio.run(hammered())
            log(
                f"ingest hammered: {hammer_chunks} chunks in {hammer_s:.1f} s; searches {searched['statuses']}"
            )
            out["load_average"] = [round(x, 2) for x in os.getloadavg()]

        statuses = searched["statuses"]
        ok = statuses.get("200", 0)
        db = sqlite3.connect(Path(tmp) / "data" / "lorebase.db")
        rows, distinct = db.execute(
            "SELECT count(*), count(DISTINCT id) FROM query_logs WHERE kb_id = ?", (search_kb,)
        ).fetchone()
        db.close()
        alone_rate, hammer_rate = alone_chunks / alone_s, hammer_chunks / hammer_s
        lat = searched["latencies"]
        out.update(
            {
                "ingest_alone_chunks_per_s": round(alone_rate, 2),
                "ingest_hammered_chunks_per_s": round(hammer_rate, 2),
                "ingest_ratio": round(hammer_rate / alone_rate, 3),
                "searches": sum(statuses.values()),
                "searches_ok": ok,
                "searches_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
                "searches_429": statuses.get("429", 0),
                "searches_failed_transport": sum(v for k, v in statuses.items() if k.startswith("transport")),
                "statuses": statuses,
                "searches_per_s": round(sum(statuses.values()) / hammer_s, 1),
                "search_p50_ms": round(statistics.median(lat), 1) if lat else None,
                "search_p99_ms": round(percentile(lat, 99), 1) if lat else None,
                "query_log_rows": rows,
                "query_log_ok": rows == ok + 2 and distinct == rows,  # + the two warm-up searches
            }
        )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
