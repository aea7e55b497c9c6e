"""``lorebase eval``: retrieval quality of a KB on BEIR-format queries and qrels.

Metrics are computed here (a dozen lines each, the standard trec_eval definitions: nDCG with
linear gain and log2 discount, recall over judged-relevant documents) rather than pulling a
compiled evaluation package into the install. Results are per document: a document's rank is
that of its best chunk. Evaluation queries are not written to the query log.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lorebase.adapters.embedders import embedder_info
from lorebase.assembly import assemble
from lorebase.cli.common import console
from lorebase.cli.follow import follow
from lorebase.db.models import Chunk, Document
from lorebase.errors import InvalidInput
from lorebase.runtime import Runtime
from lorebase.services import drafts, kbs
from lorebase.services.auth import Principal
from lorebase.services.search import retrieve

CHUNK_DEPTH = 300  # chunks fetched per query, enough for 100 distinct documents


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    dcg = sum(rels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def load_qrels(path: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return out


def load_queries(path: str) -> dict[str, str]:
    with open(path) as f:
        return {q["_id"]: q["text"] for q in map(json.loads, f) if q}


def build_from_corpus(rt: Runtime, p: Principal, name: str, corpus: str, model: str | None = None) -> str:
    records = []
    with open(corpus) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                records.append(
                    {"external_id": str(d["_id"]), "title": d.get("title") or None, "text": d["text"]}
                )
    config = {"embedding": {"model": model}} if model else None
    draft = drafts.create(rt, p, name=name, description=f"built from {Path(corpus).name}", config=config)
    drafts.add_text(rt, p, draft["id"], records)
    result = drafts.finalize(rt, p, draft["id"])
    console.print(f"building {name} from {len(records)} corpus documents ({model or rt.settings.embedder})")
    process = assemble(rt.settings, role="cli", concurrency=2, runtime=rt).start()
    try:
        state = follow(rt, p, result["pipeline_id"], interval=1.0)
    finally:
        process.stop()
    if state["status"] not in ("completed", "completed_with_errors"):
        raise InvalidInput(f"building the KB ended {state['status']}: {state.get('error')}")
    return str(result["kb_id"])


def run_eval(
    rt: Runtime,
    p: Principal,
    *,
    kb: str,
    queries: str,
    qrels: str,
    corpus: str | None,
    modes: list[str],
    limit: int | None,
    model: str | None = None,
) -> dict[str, Any]:
    """``model`` (an embedding model spec) is the one a KB built from ``corpus`` uses; an existing
    KB built with another model is an error, not a silent comparison of the wrong vectors."""
    if model:
        embedder_info(model)  # an unknown model fails before anything is built
    found = kbs.find_by_name(rt, p, kb)
    if found is None:
        if corpus is None:
            raise InvalidInput(f"no knowledge base {kb!r}; pass --corpus to build it from a BEIR corpus")
        kb_id = build_from_corpus(rt, p, kb, corpus, model)
    else:
        kb_id = found["id"]
        built_with = found["config"]["embedding"]["model"]
        if model and built_with != model:
            raise InvalidInput(
                f"knowledge base {kb!r} was built with {built_with}, not {model}: "
                "pass another --kb name to build one with this model"
            )
    judgements = load_qrels(qrels)
    texts = load_queries(queries)
    qids = [q for q in texts if q in judgements][: limit or None]
    if not qids:
        raise InvalidInput("no query has judgements in the qrels file")
    report: dict[str, Any] = {"kb_id": kb_id, "queries": len(qids), "modes": {}}
    with rt.db.read_session() as s:
        kb_row = kbs.load(s, p, kb_id)
        report["model"] = kb_row.config["embedding"]["model"]
        ext = dict(
            s.execute(
                select(Chunk.pk, Document.external_id)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.kb_id == kb_id)
            ).all()
        )
        for mode in modes:
            totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0}
            started = time.perf_counter()
            for qid in qids:
                ranked = retrieve(rt, s, kb_row, texts[qid], mode=mode, top_k=CHUNK_DEPTH)  # type: ignore[arg-type]
                docs = list(dict.fromkeys(str(ext.get(r.pk)) for r in ranked))
                rels = judgements[qid]
                totals["ndcg@10"] += ndcg_at(docs, rels, 10)
                totals["recall@10"] += recall_at(docs, rels, 10)
                totals["recall@100"] += recall_at(docs, rels, 100)
            elapsed = time.perf_counter() - started
            report["modes"][mode] = {k: round(v / len(qids), 4) for k, v in totals.items()}
            report["modes"][mode]["ms_per_query"] = round(1000 * elapsed / len(qids), 2)
    return report
