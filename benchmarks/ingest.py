"""Ingestion throughput: lorebase end-to-end vs. the bare embedding model, side by side.

Two corpora (``--docs``):

* ``chunks`` (default): N chunk-sized texts (180-190 model tokens each) from SciFact abstracts,
  posted as title-less text records (one record = one chunk; the worst case per document);
* ``titled``: SciFact abstracts *with their titles* whose text is longer than one chunk, posted
  as ``{title, text}`` records until they make about N chunks (2-4 chunks each). lorebase embeds
  the title (and section path) in front of each chunk; the bare encode reads exactly those
  embed texts, taken from the stored chunks of the e2e run just before it.

``--model`` picks lorebase's runtime: ``fp32`` (torch, the default) or ``int8`` (ONNX Runtime,
built once before the runs and copied into each fresh data dir). The bare baseline is always
torch fp32 ``SentenceTransformer.encode``, so with ``int8`` the ratio is the speed-up a user
gets over the plain model; ``raw_int8_chunks_per_s`` is lorebase's int8 embedder alone.

For the ``chunks`` corpus it measures, in one process and on the same texts:

* raw: ``SentenceTransformer.encode(texts, batch_size=32, normalize_embeddings=True)`` on a
  warmed-up model (only the encode call is timed);
* e2e: the same texts posted as title-less text records to a KB draft through the HTTP API of
  an in-process app (TestClient with lifespan, 2 embedded workers, fresh data dir so the
  embedding cache is cold); timed from just before ``finalize`` to the poll (every 0.1 s) that
  sees the pipeline ``completed``. lorebase's model is loaded and warmed before finalize, so
  model load time is excluded (it is reported separately as ``lorebase_model_load_seconds``).

raw and e2e alternate (raw, e2e, raw, e2e, ... ``--repeats`` pairs) and medians are reported.
Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/ingest.py [--chunks N] [--repeats R] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchmarks/queue.py is named like the stdlib's ``queue`` module, and a script's own directory
# comes first on the import path: drop it before anything imports ``queue``.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

CORPUS = (
    Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "corpus.jsonl"
)  # ../shared beside the repo
MODEL = "all-MiniLM-L6-v2"
INT8 = "all-MiniLM-L6-v2-int8"
MAX_TOKENS = 190  # each text stays under the KB's default chunk_size (200), so one record = one chunk
MIN_TOKENS = 180
FINAL = ("completed", "completed_with_errors", "failed", "cancelled")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def log(*args: Any) -> None:
    print("[ingest]", *args, file=sys.stderr, flush=True)


# -- texts ---------------------------------------------------------------------------------------
def build_texts(n: int) -> list[str]:
    """N distinct texts of MIN_TOKENS..MAX_TOKENS tokens: consecutive word windows of SciFact
    abstracts, cut at the last sentence end in range when there is one, else at a word."""
    from lorebase.adapters.embedders.local import load_tokenizer

    tok = load_tokenizer(MODEL)
    texts: list[str] = []
    seen: set[str] = set()
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            words = json.loads(line)["text"].split()
            if not words:
                continue
            counts = [len(e.ids) for e in tok.encode_batch(words, add_special_tokens=False)]
            start = 0
            while start < len(words):
                total, end, best, best_sentence = 0, start, None, None
                while end < len(words) and total + counts[end] <= MAX_TOKENS:
                    total += counts[end]
                    end += 1
                    if total >= MIN_TOKENS:
                        best = end
                        if _SENTENCE_END.search(words[end - 1]):
                            best_sentence = end
                cut = best_sentence or best
                if cut is None:
                    break  # the rest of this abstract is too short for a full chunk
                text = " ".join(words[start:cut])
                start = cut
                if text in seen:
                    continue
                real = len(tok.encode(text, add_special_tokens=False).ids)
                if MIN_TOKENS <= real <= MAX_TOKENS:
                    seen.add(text)
                    texts.append(text)
                    if len(texts) == n:
                        return texts
    raise SystemExit(f"the corpus gave only {len(texts)} texts, {n} wanted")


# -- raw -----------------------------------------------------------------------------------------
def load_raw_model() -> Any:
    from sentence_transformers import SentenceTransformer

    from lorebase.adapters.embedders.local import LOCAL_MODELS, model_dir

    model = SentenceTransformer(str(model_dir(MODEL)), device="cpu")
    model.max_seq_length = LOCAL_MODELS[MODEL][1]  # same as lorebase's LocalEmbedder
    return model


def run_raw(model: Any, texts: list[str]) -> float:
    t0 = time.perf_counter()
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    elapsed = time.perf_counter() - t0
    assert len(vectors) == len(texts)
    return elapsed


def build_titled(n: int) -> tuple[list[dict[str, str]], list[str]]:
    """SciFact abstracts with titles whose text is over one chunk (> 210 tokens), as text records,
    until their estimated chunks (tokens / 180) reach N; plus a few short other texts to warm up."""
    from lorebase.adapters.embedders.local import load_tokenizer

    tok = load_tokenizer(MODEL)
    records: list[dict[str, str]] = []
    warm: list[str] = []
    estimate = 0.0
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            title, text = (doc.get("title") or "").strip(), doc["text"].strip()
            if not title or not text:
                continue
            tokens = len(tok.encode(text, add_special_tokens=False).ids)
            if tokens <= 210:
                if len(warm) < 8:
                    warm.append(f"{title}\n\n{text}")
                continue
            records.append({"external_id": str(doc["_id"]), "title": title, "text": text})
            estimate += tokens / 180
            if estimate >= n and len(warm) >= 8:
                return records, warm
    raise SystemExit(f"the corpus gave only ~{estimate:.0f} chunks, {n} wanted")


# -- end to end ----------------------------------------------------------------------------------
def prepare_int8(root: Path) -> float:
    """Build the int8 model once into ``root/models`` (copied into every e2e data dir); seconds."""
    from lorebase.adapters.embedders.int8 import ensure_model

    t0 = time.perf_counter()
    ensure_model(root, INT8)
    return time.perf_counter() - t0


def run_e2e(
    records: list[dict[str, str]], warm_texts: list[str], workers: int, model: str, models_src: Path | None
) -> dict[str, Any]:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from lorebase.app import create_app
    from lorebase.db.models import Chunk
    from lorebase.services.auth import create_key
    from lorebase.settings import Settings

    with tempfile.TemporaryDirectory(prefix="lorebase-bench-ingest-") as tmp:
        data_dir = Path(tmp) / "data"
        if models_src is not None:
            shutil.copytree(models_src / "models", data_dir / "models")
        settings = Settings(data_dir=data_dir, embedder=model, _env_file=None)  # type: ignore[call-arg]
        with TestClient(create_app(settings, workers=workers)) as client:
            runtime = client.app.state.runtime  # type: ignore[attr-defined]
            key, _ = create_key(runtime.db, workspace="default")
            h = {"Authorization": f"Bearer {key}"}

            # lorebase loads its model lazily: load and run it once now, so the timed part
            # measures throughput, not start-up (embed() alone does not touch the cache)
            t0 = time.perf_counter()
            embedder = runtime.embedder()
            embedder.warm_up()  # type: ignore[attr-defined]
            load_s = time.perf_counter() - t0
            embedder.embed(warm_texts)
            embedder.tokenizer()

            r = client.post("/api/v1/kb-drafts", json={"name": "bench-ingest"}, headers=h)
            r.raise_for_status()
            draft = r.json()["id"]
            r = client.post(
                f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": records}, headers=h
            )
            r.raise_for_status()

            t0 = time.perf_counter()
            r = client.post(f"/api/v1/kb-drafts/{draft}/finalize", headers=h)
            r.raise_for_status()
            finalize_ms = (time.perf_counter() - t0) * 1000
            pipeline_id = r.json()["pipeline_id"]
            deadline = time.monotonic() + max(600.0, 2.0 * len(records))
            while True:
                p = client.get(f"/api/v1/pipelines/{pipeline_id}", headers=h).json()
                if p["status"] in FINAL:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"pipeline did not finish: {p}")
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            if p["status"] != "completed":
                raise SystemExit(f"pipeline ended {p['status']}: {p}")

            with runtime.db.read_session() as s:
                embedded_texts = list(s.execute(select(Chunk.embed_text).order_by(Chunk.pk)).scalars())
    return {
        "seconds": elapsed,
        "counts": p["counts"],
        "finalize_ms": finalize_ms,
        "load_s": load_s,
        "embed_texts": embedded_texts,
    }


def raw_int8(texts: list[str], root: Path) -> float:
    """lorebase's int8 embedder alone (no jobs, no database) on the same texts; seconds."""
    from lorebase.adapters.embedders import build_embedder

    embedder = build_embedder(f"local:{INT8}", data_dir=root, slot="bench")
    embedder.embed(texts[:16])
    t0 = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=None, help="number of chunks (default 500; --smoke: 60)")
    ap.add_argument("--repeats", type=int, default=1, help="raw/e2e pairs, alternated (default 1)")
    ap.add_argument("--workers", type=int, default=2, help="embedded worker threads (default 2)")
    ap.add_argument("--docs", choices=("chunks", "titled"), default="chunks", help="the corpus (see above)")
    ap.add_argument("--model", choices=("fp32", "int8"), default="fp32", help="lorebase's embedding runtime")
    ap.add_argument("--smoke", action="store_true", help="a quick run (60 chunks)")
    args = ap.parse_args()
    n = args.chunks or (60 if args.smoke else 500)
    model = f"local:{INT8}" if args.model == "int8" else f"local:{MODEL}"

    t0 = time.perf_counter()
    if args.docs == "chunks":
        texts = build_texts(n + 8)
        texts, warm_texts = texts[:n], texts[n:]
        records = [{"external_id": f"t{i}", "text": t} for i, t in enumerate(texts)]
    else:
        records, warm_texts = build_titled(n)
        texts = []  # the embed texts come from the first e2e run
    log(f"{len(records)} records ({args.docs}) in {time.perf_counter() - t0:.1f}s; lorebase runs {model}")

    t0 = time.perf_counter()
    raw_model = load_raw_model()
    raw_load_s = time.perf_counter() - t0
    raw_model.encode(warm_texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    log(f"raw model loaded in {raw_load_s:.1f}s and warmed up")

    with tempfile.TemporaryDirectory(prefix="lorebase-bench-models-") as models_tmp:
        models_root = Path(models_tmp)
        build_s = None
        if args.model == "int8":
            build_s = prepare_int8(models_root)
            log(f"int8 model built in {build_s:.1f}s")
        raw_s: list[float] = []
        raw8_s: list[float] = []
        e2e: list[dict[str, Any]] = []
        for i in range(args.repeats):
            if texts:  # raw first when the texts are known, as before
                raw_s.append(run_raw(raw_model, texts))
            e2e.append(
                run_e2e(
                    records, warm_texts, args.workers, model, models_root if args.model == "int8" else None
                )
            )
            r = e2e[-1]
            if not texts:
                texts = list(r["embed_texts"])
            if len(raw_s) <= i:
                raw_s.append(run_raw(raw_model, texts))
            if args.model == "int8":
                raw8_s.append(raw_int8(texts, models_root))
            m = len(texts)
            log(
                f"pair {i + 1}/{args.repeats}: raw fp32 {raw_s[-1]:.2f}s = {m / raw_s[-1]:.1f} chunks/s; "
                f"e2e {r['seconds']:.2f}s = {len(r['embed_texts']) / r['seconds']:.1f} chunks/s "
                f"(finalize {r['finalize_ms']:.0f} ms, model load {r['load_s']:.1f}s excluded, counts {r['counts']})"
                + (f"; raw int8 {m / raw8_s[-1]:.1f} chunks/s" if raw8_s else "")
            )

    m = len(texts)
    raw_med = statistics.median(raw_s)
    e2e_med = statistics.median(r["seconds"] for r in e2e)
    created = [r["counts"].get("chunks_created") for r in e2e]
    from lorebase.adapters.embedders.local import load_tokenizer

    lens = [len(e.ids) for e in load_tokenizer(MODEL).encode_batch(texts, add_special_tokens=False)]
    out = {
        "model": model,
        "docs": args.docs,
        "documents": len(records),
        "raw_chunks_per_s": round(m / raw_med, 2),
        "e2e_chunks_per_s": round(m / e2e_med, 2),
        "ratio": round(raw_med / e2e_med, 3),
        "chunks": m,
        "chunks_created": created[0] if len(set(created)) == 1 else created,
        "chunks_ok": all(c == m for c in created)
        and all(sorted(r["embed_texts"]) == sorted(texts) for r in e2e),
        "e2e_seconds": round(e2e_med, 3),
        "raw_seconds": round(raw_med, 3),
        "repeats": args.repeats,
        "workers": args.workers,
        "tokens_min": min(lens),
        "tokens_max": max(lens),
        "finalize_ms": round(statistics.median(r["finalize_ms"] for r in e2e), 1),
        "lorebase_model_load_seconds": round(
            e2e[0]["load_s"], 3
        ),  # first e2e: later ones reuse the process-wide model
        "e2e_seconds_all": [round(r["seconds"], 3) for r in e2e],
        "raw_seconds_all": [round(s, 3) for s in raw_s],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if raw8_s:
        out["raw_int8_chunks_per_s"] = round(m / statistics.median(raw8_s), 2)
        out["int8_build_seconds"] = round(build_s or 0.0, 1)
    if not out["chunks_ok"]:
        log("WARNING: chunks_created != chunks or the embedder input differed between runs")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
