"""Finalize latency: p50/p99 of ``POST /api/v1/kb-drafts/{id}/finalize`` for a 100-source draft.

DESIGN.md section 1 promises finalize is synchronous and fast (under 100 ms): it creates the
KB, one pending document per source item, the pipeline and the jobs, and deletes the draft.

Setup: a real ``lorebase serve`` (uvicorn) in a subprocess on a free loopback port, with
``LOREBASE_DATA_DIR`` pointing at a fresh temp dir and ``--workers 0`` by default (API only,
so background processing does not compete with the measured requests); ``--workers 2`` runs
the embedded workers in the server too, which then process every finalized KB while later
finalize calls are timed. The API key comes from ``lorebase keys create`` on the same data
dir. Every run builds a new draft with ``--sources`` sources: half uploaded small files
(alternately ``.md`` and ``.txt``, one multipart request) and half text records (one JSON
request); only the finalize call is timed, client-side with ``httpx`` around the request.
One warm-up finalize (not counted) precedes the timed runs.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/finalize.py [--sources 100] [--runs 30] [--workers 0] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
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
from live_server import live_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (
    Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "corpus.jsonl"
)  # ../shared beside the repo


def log(*args: Any) -> None:
    print("[finalize]", *args, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 30 runs is the largest but none: rank ceil(0.99*30)=30)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def load_abstracts(n: int) -> list[dict[str, str]]:
    out = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["text"].strip():
                out.append({"title": row["title"], "text": row["text"]})
            if len(out) == n:
                break
    return out


def build_draft(client: httpx.Client, run: int, n_sources: int, abstracts: list[dict[str, str]]) -> str:
    r = client.post("/api/v1/kb-drafts", json={"name": f"bench-finalize-{run}"})
    r.raise_for_status()
    draft = r.json()["id"]
    n_files = n_sources // 2
    n_records = n_sources - n_files
    files = []
    for i in range(n_files):
        a = abstracts[i % len(abstracts)]
        # unique content per run and file, so nothing is deduplicated
        if i % 2 == 0:
            body = f"# {a['title']}\n\n## Abstract\n\n{a['text']}\n\n(run {run}, file {i})\n"
            files.append(("files", (f"doc-{run}-{i}.md", body.encode(), "text/markdown")))
        else:
            body = f"{a['title']}\n\n{a['text']}\n\n(run {run}, file {i})\n"
            files.append(("files", (f"doc-{run}-{i}.txt", body.encode(), "text/plain")))
    if files:
        r = client.post(f"/api/v1/kb-drafts/{draft}/sources", files=files)
        r.raise_for_status()
    if n_records:
        docs = [
            {
                "external_id": f"rec-{run}-{j}",
                "title": abstracts[(n_files + j) % len(abstracts)]["title"],
                "text": f"{abstracts[(n_files + j) % len(abstracts)]['text']} (run {run}, record {j})",
            }
            for j in range(n_records)
        ]
        r = client.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": docs})
        r.raise_for_status()
    return draft


def wait_for_embedding(client: httpx.Client, pipeline_id: str, timeout: float = 180.0) -> float:
    """Seconds until the warm-up KB's pipeline has embedded a chunk: the workers have loaded the
    model (a one-time start-up cost that stalls the process: imports hold the GIL) and are now
    embedding, which is the load ``--workers N`` is meant to measure finalize under."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        p = client.get(f"/api/v1/pipelines/{pipeline_id}").json()
        if p["counts"]["chunks_embedded"] > 0 or p["status"] in (
            "completed",
            "completed_with_errors",
            "failed",
            "cancelled",
        ):
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise SystemExit(f"the workers embedded nothing in {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=100, help="sources per draft (half files, half records)")
    ap.add_argument("--runs", type=int, default=None, help="timed finalize calls (default 30; --smoke: 5)")
    ap.add_argument("--workers", type=int, default=0, help="embedded workers in the server (default 0)")
    ap.add_argument("--smoke", action="store_true", help="a quick run (5 runs)")
    args = ap.parse_args()
    runs = args.runs or (5 if args.smoke else 30)

    abstracts = load_abstracts(args.sources)
    with tempfile.TemporaryDirectory(prefix="lorebase-bench-finalize-") as tmp:
        # the latency of finalize is measured here, not the per-key limits (30 finalizes and
        # 120 uploads a minute by default)
        limits = {"LOREBASE_LIMITS__FINALIZE_PER_MINUTE": "0", "LOREBASE_LIMITS__UPLOADS_PER_MINUTE": "0"}
        with (
            live_server(Path(tmp) / "data", workers=args.workers, log_dir=Path(tmp), extra_env=limits) as (
                base,
                key,
                _,
            ),
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client,
        ):
            log(f"server on {base}, workers={args.workers}; {runs} runs of {args.sources} sources")

            latencies: list[float] = []
            for run in range(runs + 1):  # run 0 warms up the server and is not counted
                draft = build_draft(client, run, args.sources, abstracts)
                t0 = time.perf_counter()
                r = client.post(f"/api/v1/kb-drafts/{draft}/finalize")
                ms = (time.perf_counter() - t0) * 1000
                if r.status_code != 202:
                    raise SystemExit(f"finalize answered {r.status_code}: {r.text}")
                kb = client.get(f"/api/v1/kbs/{r.json()['kb_id']}").json()
                docs = kb.get("counts", {}).get("documents")
                if docs != args.sources:
                    raise SystemExit(f"finalize made {docs} documents, {args.sources} expected: {kb}")
                if run == 0:
                    log(f"warm-up finalize {ms:.1f} ms (not counted)")
                    if args.workers:
                        warm_s = wait_for_embedding(client, r.json()["pipeline_id"])
                        log(f"workers embedding the backlog after {warm_s:.1f} s (model loaded)")
                    continue
                latencies.append(ms)
                log(f"run {run}/{runs}: {ms:.1f} ms")

    out = {
        "sources": args.sources,
        "source_mix": f"{args.sources // 2} files (.md/.txt) + {args.sources - args.sources // 2} text records",
        "runs": runs,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "min_ms": round(min(latencies), 1),
        "mean_ms": round(statistics.mean(latencies), 1),
        "workers": args.workers,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
