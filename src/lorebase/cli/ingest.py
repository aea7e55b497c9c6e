"""``lorebase ingest``: files, folders and websites into a KB (new or existing), following the
pipeline. A URL the KB already crawls is refreshed: only changed pages are re-processed."""

from __future__ import annotations

from typing import Any

from lorebase.assembly import assemble
from lorebase.cli.common import console
from lorebase.cli.follow import follow
from lorebase.cli.paths import collect, count, is_url
from lorebase.runtime import Runtime
from lorebase.services import drafts, kbs, pipelines, sources
from lorebase.services.auth import Principal
from lorebase.services.documents import FileTuple


def ingest(
    rt: Runtime,
    p: Principal,
    paths: list[str],
    *,
    kb_name: str,
    config: dict[str, Any] | None,
    wait: bool,
    workers: int,
    quiet: bool = False,
    crawl: dict[str, Any] | None = None,
) -> dict[str, Any]:
    urls = [raw for raw in paths if is_url(raw)]
    files = collect([raw for raw in paths if not is_url(raw)]) if len(urls) < len(paths) else []
    # paths, not bytes: each file is read when stored, one at a time
    payload: list[FileTuple] = [(f.name, None, f) for f, _ in files]
    external_ids: list[str | None] = [ext for _, ext in files]
    existing = kbs.find_by_name(rt, p, kb_name)
    pipeline_ids: list[str] = []
    if existing is None:
        draft = drafts.create(rt, p, name=kb_name, description=None, config=config)
        if files:
            drafts.add_files(rt, p, draft["id"], payload, external_ids)
        for url in urls:
            drafts.add_web(rt, p, draft["id"], url, crawl)
        result = drafts.finalize(rt, p, draft["id"])
        kb_id = result["kb_id"]
        pipeline_ids.append(result["pipeline_id"])
        if not quiet:
            what = ", ".join(x for x in (count(len(files), "file"), count(len(urls), "website")) if x)
            console.print(f"created knowledge base [bold]{kb_name}[/] ({kb_id}) from {what}")
    else:
        kb_id = existing["id"]
        if files:
            added = kbs.add_documents(rt, p, kb_id, files=payload, external_ids=external_ids)
            pipeline_ids.append(added["pipeline_id"])
            skipped = sum(1 for d in added["documents"] if d["status"] == "skipped")
            if not quiet:
                console.print(f"adding {len(files)} files to [bold]{kb_name}[/] ({skipped} unchanged)")
        if urls:
            crawled = sources.crawl_urls(rt, p, kb_id, urls, crawl)
            pipeline_ids.append(crawled["pipeline_id"])
            if not quiet:
                for src in crawled["refreshed"]:
                    console.print(
                        f"refreshing {src['url']} in [bold]{kb_name}[/] (only changes are re-processed)"
                    )
                for src in crawled["added"]:
                    console.print(f"crawling {src['url']} into [bold]{kb_name}[/]")
    states = [pipelines.get(rt, p, pid) for pid in pipeline_ids]
    if wait:
        process = assemble(rt.settings, role="cli", concurrency=workers, runtime=rt) if workers > 0 else None
        if process:
            process.start()
        try:
            states = [follow(rt, p, pid, quiet=quiet) for pid in pipeline_ids]
        finally:
            if process:
                process.stop()
    return {"kb_id": kb_id, "pipeline": states[-1], "pipelines": states}
