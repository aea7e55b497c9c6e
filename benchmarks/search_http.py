"""Search latency through HTTP on a real KB: ``POST /api/v1/kbs/{id}/search`` as a client sees it.

The KB is the SciFact one that ``lorebase eval`` (``make eval``) builds: 5,183 abstracts, ~12k
chunks, real embeddings. This script serves that data dir with ``lorebase serve --workers 0`` on
a free loopback port (search only: nothing ingests meanwhile), creates an API key with the CLI,
and sends the SciFact train queries one after another from one client (``httpx``, keep-alive).
Each query is asked once per mode, the modes in turn (which one goes first rotates), so the modes
see the same machine load. The clock runs around the request: the query embedding, both halves,
fusion, hydration, the query log and HTTP. Warm-up queries (not counted) come first: the first
search of a KB in a process loads its indexes into memory (``vector_cache.py``,
``keyword_cache.py``), and that load is reported on its own (``first_search_ms``).

    make eval                                     # builds ./lorebase-eval once (~10 min)
    .venv/bin/python benchmarks/search_http.py [--data-dir ./lorebase-eval] [--kb scifact]
                                               [--queries 300] [--modes hybrid,keyword,vector]

Prints one JSON line on stdout (p50/p99/mean per mode, nearest rank); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

QUERIES = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "queries-train.jsonl"


def log(*args: Any) -> None:
    print("[search_http]", *args, file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-dir", type=Path, default=Path("lorebase-eval"), help="holds the KB (./lorebase-eval)"
    )
    ap.add_argument("--kb", default="scifact", help="the KB's name (scifact)")
    ap.add_argument("--queries", type=int, default=300, help="measured queries per mode (300)")
    ap.add_argument("--warm-up", type=int, default=50, help="warm-up queries, not counted (50)")
    ap.add_argument("--modes", default="hybrid,keyword,vector")
    ap.add_argument("--query-file", type=Path, default=QUERIES)
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    texts = [json.loads(line)["text"] for line in args.query_file.open(encoding="utf-8")]
    needed = args.warm_up + args.queries
    texts = (texts * math.ceil(needed / len(texts)))[:needed]
    if not (args.data_dir / "lorebase.db").exists() and not any(args.data_dir.glob("*.db")):
        log(f"{args.data_dir} holds no lorebase database: run `make eval` first (or pass --data-dir)")
        return 2

    times: dict[str, list[float]] = {m: [] for m in modes}
    first_ms: dict[str, float] = {}
    limits = {"LOREBASE_LIMITS__SEARCH_PER_MINUTE": "0"}  # latency is measured here, not the limit
    with (
        tempfile.TemporaryDirectory(prefix="lorebase-bench-search-") as tmp,
        live_server(args.data_dir.resolve(), workers=0, log_dir=Path(tmp), extra_env=limits) as (
            base,
            key,
            _,
        ),
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client,
    ):
        kbs = client.get("/api/v1/kbs", params={"limit": 1000}).json()["items"]
        found = [kb for kb in kbs if kb["name"] == args.kb or kb["id"] == args.kb]
        if not found:
            raise SystemExit(f"no KB {args.kb!r} in {args.data_dir}: {[kb['name'] for kb in kbs]}")
        kb = found[0]
        log(f"server on {base}; KB {kb['name']} ({kb['id']}): {kb.get('counts')}")
        model = client.get(f"/api/v1/kbs/{kb['id']}").json()["config"]["embedding"]["model"]
        for i, query in enumerate(texts):
            order = modes[i % len(modes) :] + modes[: i % len(modes)]
            for mode in order:
                t0 = time.perf_counter()
                r = client.post(
                    f"/api/v1/kbs/{kb['id']}/search", json={"query": query, "top_k": 10, "mode": mode}
                )
                ms = 1000 * (time.perf_counter() - t0)
                if r.status_code != 200:
                    raise SystemExit(f"search answered {r.status_code}: {r.text[:300]}")
                if not r.json()["results"]:
                    raise SystemExit(f"search {mode} of {query!r} found nothing")
                if mode not in first_ms:
                    first_ms[mode] = round(ms, 1)
                    if model == "local:all-MiniLM-L6-v2" and mode != "keyword":
                        # its queries move to ONNX Runtime once the server has built it
                        wait_for_query_model(args.data_dir)
                elif i >= args.warm_up:
                    times[mode].append(ms)

    out: dict[str, Any] = {"benchmark": "search_http", "kb": args.kb, "model": model, "queries": args.queries}
    for mode in modes:
        ms = times[mode]
        out[mode] = {
            "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "mean_ms": round(statistics.fmean(ms), 2),
            "first_search_ms": first_ms[mode],
        }
        log(f"{mode:8} p50 {out[mode]['p50_ms']:7.2f} ms  p99 {out[mode]['p99_ms']:7.2f} ms")
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
