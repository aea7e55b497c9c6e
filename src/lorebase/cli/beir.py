"""BEIR-format files (queries.jsonl, qrels .tsv, corpus.jsonl), read for ``lorebase eval`` and
``kb reindex --activate if_better``, locally and remotely."""

from __future__ import annotations

import csv
import json
from typing import Any


def load_qrels(path: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return out


def load_queries(path: str) -> dict[str, str]:
    with open(path) as f:
        return {q["_id"]: q["text"] for q in map(json.loads, f) if q}


def load_corpus(path: str) -> list[dict[str, Any]]:
    """Text records: ``{external_id, title, text}`` per corpus line."""
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                records.append(
                    {"external_id": str(d["_id"]), "title": d.get("title") or None, "text": d["text"]}
                )
    return records


def evaluation_body(queries: str, qrels: str) -> dict[str, Any]:
    """``{queries, qrels}`` of an evaluation request: the judged queries only."""
    judged = load_qrels(qrels)
    texts = load_queries(queries)
    return {"queries": [{"id": q, "text": t} for q, t in texts.items() if q in judged], "qrels": judged}
