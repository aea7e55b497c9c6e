"""What the commands print, from the API's shapes (dicts as the services return them and as the
server answers them): one rendering for the local and the remote CLI."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.table import Table

from lorebase.cli.common import console


def search(result: dict[str, Any], *, kb_name: str, query: str, mode: str, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    table = Table(title=f"{mode} search in {kb_name}: {query}")
    for col in ("#", "score", "document", "section", "text"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(result["results"], 1):
        doc = r.get("title") or r.get("filename") or r.get("external_id") or r["document_id"]
        text = r["text"][:200] + ("…" if len(r["text"]) > 200 else "")
        table.add_row(str(i), f"{r['score']:.4f}", str(doc), " > ".join(r.get("section") or []), text)
    console.print(table)


def kb_list(data: dict[str, Any]) -> None:
    table = Table(title=f"{data['total']} knowledge bases")
    for col in ("id", "name", "status", "documents", "indexed", "failed", "chunks"):
        table.add_column(col)
    for kb in data["items"]:
        c = kb["counts"]
        table.add_row(
            kb["id"],
            kb["name"],
            kb["status"],
            *(str(c[k]) for k in ("documents", "indexed", "failed", "chunks")),
        )
    console.print(table)


def kb_show(kb: dict[str, Any]) -> None:
    console.print_json(json.dumps(kb, default=str))


def versions(items: list[dict[str, Any]]) -> None:
    table = Table("version", "status", "chunking", "model", "chunks", "message")
    for v in items:
        chunking = v["config"].get("chunking") or {}
        table.add_row(
            str(v["version"]),
            v["status"],
            f"{chunking.get('chunk_size')}/{chunking.get('chunk_overlap')}",
            (v["config"].get("embedding") or {}).get("model", ""),
            str((v.get("counts") or {}).get("chunks", "")),
            v.get("message") or "",
        )
    console.print(table)


def jobs(data: dict[str, Any], stats: dict[str, Any]) -> None:
    table = Table(
        title=f"{data['total']} jobs — pending {stats['pending']}, running {stats['running']}, dead {stats['dead']}"
    )
    for col in ("id", "type", "status", "attempts", "document", "last error"):
        table.add_column(col, overflow="fold")
    for j in data["items"]:
        table.add_row(
            j["id"],
            j["type"],
            j["status"],
            f"{j['attempts']}/{j['max_attempts']}",
            j.get("document_id") or "",
            (j.get("last_error") or "")[:120],
        )
    console.print(table)


def evaluation(report: dict[str, Any], kb: str) -> None:
    table = Table(title=f"retrieval quality of {kb} ({report['model']}, {report['queries']} queries)")
    for col in ("mode", "nDCG@10", "recall@10", "recall@100", "ms/query"):
        table.add_column(col)
    for mode, m in report["modes"].items():
        ms = m.get("ms_per_query")
        table.add_row(
            mode,
            f"{m['ndcg@10']:.4f}",
            f"{m['recall@10']:.4f}",
            f"{m['recall@100']:.4f}",
            f"{ms:.1f}" if ms is not None else "-",
        )
    console.print(table)
    print(json.dumps(report))


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)[:16].replace("T", " ") if value else "never"


def keys(items: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(items)} API key(s)")
    for col in ("id", "prefix", "workspace", "name", "scopes", "state", "expires", "last used"):
        table.add_column(col, overflow="fold")
    for k in items:
        table.add_row(
            k["id"],
            f"{k['prefix']}…",
            k.get("workspace") or "",
            k.get("name") or "",
            ",".join(k["scopes"]),
            k["state"],
            _when(k.get("expires_at")),
            _when(k.get("last_used_at")),
        )
    console.print(table)
