"""``lorebase ingest``: files and folders into a KB (new or existing), following the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorebase.cli.common import console
from lorebase.cli.follow import follow
from lorebase.errors import InvalidInput
from lorebase.pipeline.runner import build_executor
from lorebase.runtime import Runtime
from lorebase.services import drafts, kbs, pipelines
from lorebase.services.auth import Principal

SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}


def collect(paths: list[str]) -> list[tuple[Path, str]]:
    """Expand folders (recursively, supported suffixes only, hidden files skipped).

    Each file comes with its external id: its path relative to the folder given (or its name), so
    that ingesting an edited file again replaces the earlier version instead of adding a copy."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        if raw.startswith(("http://", "https://")):
            raise InvalidInput(f"{raw}: web sources are not supported by this build yet")
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            out.extend((f, f.relative_to(path).as_posix()) for f in found)
        elif path.is_file():
            out.append((path, path.name))
        else:
            raise InvalidInput(f"{raw}: no such file or folder")
    if not out:
        raise InvalidInput("no supported files found (txt, md, html, pdf, docx)")
    return out


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
) -> dict[str, Any]:
    files = collect(paths)
    payload: list[tuple[str | None, str | None, bytes]] = [(f.name, None, f.read_bytes()) for f, _ in files]
    external_ids: list[str | None] = [ext for _, ext in files]
    existing = kbs.find_by_name(rt, p, kb_name)
    if existing is None:
        draft = drafts.create(rt, p, name=kb_name, description=None, config=config)
        drafts.add_files(rt, p, draft["id"], payload, external_ids)
        result = drafts.finalize(rt, p, draft["id"])
        kb_id, pipeline_id = result["kb_id"], result["pipeline_id"]
        if not quiet:
            console.print(f"created knowledge base [bold]{kb_name}[/] ({kb_id}) from {len(files)} files")
    else:
        kb_id = existing["id"]
        added = kbs.add_documents(rt, p, kb_id, files=payload, external_ids=external_ids)
        pipeline_id = added["pipeline_id"]
        skipped = sum(1 for d in added["documents"] if d["status"] == "skipped")
        if not quiet:
            console.print(f"adding {len(files)} files to [bold]{kb_name}[/] ({skipped} unchanged)")
    state = pipelines.get(rt, p, pipeline_id)
    if wait:
        executor = build_executor(rt, concurrency=workers, name="cli") if workers > 0 else None
        if executor:
            executor.start()
        try:
            state = follow(lambda: pipelines.get(rt, p, pipeline_id), quiet=quiet)
        finally:
            if executor:
                executor.stop(drain=True)
    return {"kb_id": kb_id, "pipeline": state}
