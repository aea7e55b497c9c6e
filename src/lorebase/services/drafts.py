"""KB drafts: everything a user sets up before a KB exists. Drafts never write KB, document or
chunk rows; uploads are kept in the blob store and referenced from the draft's JSON.

Drafts are kept by ``runtime.drafts`` (``adapters/drafts``): the SQL ``drafts`` table in the
embedded mode, Redis keys with a TTL in the scaled mode (``redis_url`` set), where drafts never
touch the SQL database. Every change is one atomic read-modify-write of the repository, so
concurrent source additions all land; finalize *takes* the draft (exactly one concurrent
finalize wins, the others get 404) and puts it back if the KB cannot be created.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from lorebase.adapters.drafts.protocol import DraftRecord
from lorebase.adapters.embedders import embedder_problem, is_openai
from lorebase.adapters.parsers import ocr
from lorebase.adapters.parsers.registry import IMAGE_MEDIA_TYPES, parse_bytes
from lorebase.crawl.preview import fetch_one
from lorebase.db.models import KnowledgeBase, new_id, utcnow
from lorebase.errors import InvalidInput, JobError, LorebaseError, NotFound
from lorebase.pipeline.chunk import chunk
from lorebase.pipeline.documents import SourceItem
from lorebase.pipeline.types import ChunkingConfig
from lorebase.pipeline.versions import live_row
from lorebase.services import quotas
from lorebase.services.auth import Principal
from lorebase.services.config import (
    deep_merge,
    merged_config,
    notification_problems,
    parse_config,
)
from lorebase.services.documents import (
    FileTuple,
    describe_file,
    describe_text_record,
    save_file,
    start_pipeline,
)
from lorebase.services.pipelines import scheduled_start
from lorebase.services.sources import create_source, parse_every, validate_web_source

if TYPE_CHECKING:
    from lorebase.jobs.context import JobContext
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.drafts")

#: rough cost model for estimates: chunks embedded per second on a 2-core CPU, bytes per token
EMBED_CHUNKS_PER_SECOND = 20.0
BYTES_PER_TOKEN = 4.5


def to_dict(draft: DraftRecord) -> dict[str, Any]:
    return {
        "id": draft.id,
        "name": draft.name,
        "description": draft.description,
        "config": draft.config,
        "sources": [_public_source(s) for s in draft.sources],
        "created_at": draft.created_at,
        "updated_at": draft.updated_at,
        "expires_at": draft.expires_at,
    }


def _public_source(src: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in src.items() if k not in ("items",)}
    if src["type"] == "text":
        out["documents"] = [
            {"external_id": i.get("external_id"), "title": i.get("title"), "size_bytes": i.get("size_bytes")}
            for i in src.get("items", [])
        ]
    if src["type"] == "file":
        item = src["items"][0]
        out.update(filename=item["filename"], media_type=item["media_type"], size_bytes=item["size_bytes"])
    return out


def create(
    runtime: Runtime, p: Principal, *, name: str, description: str | None, config: dict[str, Any] | None
) -> dict[str, Any]:
    cfg = merged_config(runtime.settings, config)
    now = utcnow()
    draft = DraftRecord(
        id=new_id(),
        workspace_id=p.workspace_id,
        name=name,
        description=description,
        config=cfg,
        created_at=now,
        updated_at=now,
        expires_at=now,  # the repository sets the expiry from its TTL
    )
    return to_dict(runtime.drafts.create(draft))


def get(runtime: Runtime, p: Principal, draft_id: str) -> dict[str, Any]:
    return to_dict(runtime.drafts.get(p.workspace_id, draft_id))


def patch(
    runtime: Runtime,
    p: Principal,
    draft_id: str,
    *,
    name: str | None,
    description: str | None,
    config: dict[str, Any] | None,
) -> dict[str, Any]:

    def change(draft: DraftRecord) -> None:
        if name is not None:
            draft.name = name
        if description is not None:
            draft.description = description
        if config:
            draft.config = parse_config(deep_merge(draft.config, config)).model_dump()

    return to_dict(runtime.drafts.update(p.workspace_id, draft_id, change))


def remove(runtime: Runtime, p: Principal, draft_id: str) -> None:
    runtime.drafts.delete(p.workspace_id, draft_id)


def _append(
    runtime: Runtime, p: Principal, draft_id: str, sources: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    def change(draft: DraftRecord) -> None:
        draft.sources = [*draft.sources, *sources]

    runtime.drafts.update(p.workspace_id, draft_id, change)
    return [_public_source(src) for src in sources]


def add_files(
    runtime: Runtime,
    p: Principal,
    draft_id: str,
    files: list[FileTuple],
    external_ids: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """``files``: (filename, declared content type, bytes or a file's path). One source per file.

    Every file is checked (size, type) and the workspace quota before any is stored."""
    draft = runtime.drafts.get(p.workspace_id, draft_id)  # 404 before storing anything
    if not files:
        raise InvalidInput("no files in the request (multipart field 'files')")
    ids = external_ids or [None] * len(files)
    items = [
        describe_file(runtime, data, filename, declared, external_id=ext)
        for (filename, declared, data), ext in zip(files, ids, strict=True)
    ]
    quotas.check_new(runtime, p.workspace_id, [*_items(draft.sources), *items])
    sources = []
    for item, (_, _, data) in zip(items, files, strict=True):
        save_file(runtime, item, data)
        sources.append(
            {"id": new_id(), "type": "file", "created_at": utcnow().isoformat(), "items": [item.to_json()]}
        )
    return _append(runtime, p, draft_id, sources)


def add_text(
    runtime: Runtime, p: Principal, draft_id: str, documents: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    draft = runtime.drafts.get(p.workspace_id, draft_id)
    if not documents:
        raise InvalidInput("a text source needs at least one document")
    described = [describe_text_record(rec, i) for i, rec in enumerate(documents)]
    items = [item for item, _ in described]
    quotas.check_new(runtime, p.workspace_id, [*_items(draft.sources), *items])
    for item, data in described:
        item.blob_key = runtime.blobs.put(data)
    src = {
        "id": new_id(),
        "type": "text",
        "created_at": utcnow().isoformat(),
        "items": [i.to_json() for i in items],
    }
    return _append(runtime, p, draft_id, [src])


def add_web(
    runtime: Runtime,
    p: Principal,
    draft_id: str,
    url: str,
    crawl: dict[str, Any] | None,
    refresh_every: str | None = None,
) -> list[dict[str, Any]]:
    """A website to crawl at finalize (and again every ``refresh_every``); checked now."""
    normalized, options = validate_web_source(runtime, url, crawl)
    src: dict[str, Any] = {"id": new_id(), "type": "web", "url": normalized, "crawl": options}
    if refresh_every is not None:
        parse_every(refresh_every, minimum=runtime.settings.scheduler.refresh_seconds)
        src["refresh_every"] = refresh_every
    return _append(runtime, p, draft_id, [src])


def _web_sources(draft_sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [src for src in draft_sources if src.get("type") == "web"]


def remove_source(runtime: Runtime, p: Principal, draft_id: str, source_id: str) -> None:

    def change(draft: DraftRecord) -> None:
        kept = [src for src in draft.sources if src["id"] != source_id]
        if len(kept) == len(draft.sources):
            raise NotFound(f"source {source_id} not found in draft {draft_id}")
        draft.sources = kept

    runtime.drafts.update(p.workspace_id, draft_id, change)


def _items(draft_sources: list[dict[str, Any]]) -> list[SourceItem]:
    out = []
    for src in draft_sources:
        for raw in src.get("items", []):
            item = SourceItem.from_json(raw)
            item.source_id = src["id"]
            out.append(item)
    return out


def preview(
    runtime: Runtime, p: Principal, draft_id: str, *, source_id: str | None, limit: int
) -> dict[str, Any]:
    """Real chunks of one source item, made exactly as the pipeline will; nothing is saved."""
    row = runtime.drafts.get(p.workspace_id, draft_id)
    sources, cfg = row.sources, row.config
    if source_id is not None:
        sources = [src for src in sources if src["id"] == source_id]
        if not sources:
            raise NotFound(f"source {source_id} not found in draft {draft_id}")
    items = _items(sources)
    if not items and _web_sources(sources):
        return _preview_web(runtime, _web_sources(sources)[0], cfg, limit)
    if not items:
        raise InvalidInput("the draft has no sources to preview")
    item = items[0]
    try:
        parsed = _parse(runtime, runtime.blobs.get(item.blob_key), item.media_type, item.filename)
    except LorebaseError as exc:
        raise InvalidInput(
            f"cannot preview {item.filename or item.external_id or 'source'}: {exc.message}"
        ) from None
    return _preview_chunks(
        runtime, cfg, parsed, limit, source_id=item.source_id, title=item.title or item.filename
    )


def _parse(runtime: Runtime, data: bytes, media_type: str, filename: str | None) -> Any:
    """:func:`parse_bytes` under this runtime's OCR settings (a preview parses in this process)."""
    with ocr.use_limits(ocr.OcrLimits.of(runtime.settings.parse)):
        return parse_bytes(data, media_type, filename)


def _preview_web(runtime: Runtime, src: dict[str, Any], cfg: dict[str, Any], limit: int) -> dict[str, Any]:
    """The start page of a web source, fetched now (through the SSRF guard) and chunked."""
    result = fetch_one(runtime, src["url"])
    if result.outcome != "ok" or result.body is None or result.media_type is None:
        raise InvalidInput(f"cannot preview {src['url']}: {result.error or result.outcome}")
    try:
        parsed = _parse(runtime, result.body, result.media_type, None)
    except LorebaseError as exc:
        raise InvalidInput(f"cannot preview {src['url']}: {exc.message}") from None
    return _preview_chunks(runtime, cfg, parsed, limit, source_id=src["id"], title=src["url"])


def _preview_chunks(
    runtime: Runtime,
    cfg: dict[str, Any],
    parsed: Any,
    limit: int,
    *,
    source_id: str | None,
    title: str | None,
) -> dict[str, Any]:
    _, max_tokens = runtime.embedding_info(cfg["embedding"])
    tokenizer = runtime.embedder(embedding=cfg["embedding"]).tokenizer()
    chunks = chunk(parsed, ChunkingConfig.of(cfg), tokenizer, max_tokens=max_tokens)
    return {
        "source_id": source_id,
        "title": parsed.title or title,
        "total_chunks": len(chunks),
        "chunks": [
            {"text": c.text, "token_count": c.token_count, "metadata": c.metadata} for c in chunks[:limit]
        ],
    }


def check_config(runtime: Runtime, cfg: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(errors, warnings) of a KB config on this server: the model and store exist and are
    usable, the chunk sizes fit the model, the notifications may be sent. A draft's validation
    and a KB's config change (``services/versions.py``) both ask it."""
    errors: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    max_tokens = None
    try:
        _, max_tokens = runtime.embedding_info(cfg["embedding"])
    except InvalidInput as exc:
        errors.append({"field": "config.embedding.model", "message": exc.message})
    if (problem := embedder_problem(cfg["embedding"]["model"])) is not None:
        errors.append({"field": "config.embedding.model", "message": problem})
    if max_tokens is not None:
        errors.extend(endpoint_problems(runtime, cfg["embedding"]))
    if (problem := runtime.store_problem(cfg["store"]["type"])) is not None:
        errors.append({"field": "config.store.type", "message": problem})
    size, overlap = cfg["chunking"]["chunk_size"], cfg["chunking"]["chunk_overlap"]
    if max_tokens is not None and size > max_tokens:
        errors.append(
            {
                "field": "config.chunking.chunk_size",
                "message": f"chunk_size {size} exceeds the embedding model's maximum of {max_tokens} tokens",
            }
        )
    if overlap * 2 >= size:
        errors.append(
            {
                "field": "config.chunking.chunk_overlap",
                "message": "chunk_overlap must be under half of chunk_size",
            }
        )
    elif overlap == 0:
        warnings.append(
            {
                "field": "config.chunking.chunk_overlap",
                "message": "no overlap: context may be cut mid-thought",
            }
        )
    errors.extend(notification_problems(runtime.settings, cfg))
    if size < 64:
        warnings.append(
            {"field": "config.chunking.chunk_size", "message": "chunks under 64 tokens often retrieve poorly"}
        )
    return errors, warnings


def endpoint_problems(runtime: Runtime, embedding: dict[str, Any]) -> list[dict[str, str]]:
    """An ``openai:`` model's endpoint: named (the KB's ``base_url`` or the server's
    ``LOREBASE_OPENAI_BASE_URL``), and, when the config states no dimension, answering: one
    probe call learns the dimension the KB will record (``with_dimensions``; cached per
    process). Endpoint options on a local model are refused rather than ignored."""
    if not is_openai(embedding["model"]):
        extra = [k for k in ("base_url", "dimensions") if embedding.get(k) is not None]
        return [
            {"field": f"config.embedding.{k}", "message": "only an openai:<model> embedding takes it"}
            for k in extra
        ]
    try:
        runtime.embedder(embedding=embedding).dimensions  # noqa: B018 (the probe, when unknown)
    except InvalidInput as exc:
        return [{"field": "config.embedding.base_url", "message": exc.message}]
    except JobError as exc:
        return [
            {
                "field": "config.embedding.model",
                "message": f"{exc.message} (state config.embedding.dimensions to create the "
                "knowledge base while the endpoint is away)",
            }
        ]
    return []


def with_dimensions(runtime: Runtime, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with its ``openai:`` model's dimension recorded (a valid config's endpoint has
    answered, or the dimension was stated), so every process builds the same index."""
    embedding = cfg["embedding"]
    if not is_openai(embedding["model"]) or embedding.get("dimensions") is not None:
        return cfg
    dims = runtime.embedder(embedding=embedding).dimensions
    return {**cfg, "embedding": {**embedding, "dimensions": dims}}


def validate_draft(
    runtime: Runtime, draft: DraftRecord, items: list[SourceItem] | None = None
) -> dict[str, Any]:
    """The validation report of ``draft`` (``items``: its source items, when the caller has them)."""
    errors: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    cfg = draft.config
    items = _items(draft.sources) if items is None else items
    web = _web_sources(draft.sources)
    if not items and not web:
        errors.append(
            {"field": "sources", "message": "add at least one source (files, web URLs or text records)"}
        )
    config_errors, config_warnings = check_config(runtime, cfg)
    errors += config_errors
    warnings += config_warnings
    errors += _ocr_problems(runtime, items)
    size, overlap = cfg["chunking"]["chunk_size"], cfg["chunking"]["chunk_overlap"]
    total_bytes = sum(i.size_bytes for i in items)
    est_chunks = max(len(items), math.ceil(total_bytes / BYTES_PER_TOKEN / max(1, size - overlap)))
    # a web page holds ~8 KB of text on average: a guess until the crawl has seen the site
    est_chunks += sum(
        math.ceil(src["crawl"]["max_pages"] * 8192 / BYTES_PER_TOKEN / max(1, size - overlap)) for src in web
    )
    if total_bytes > 200 * 1024 * 1024:
        warnings.append(
            {"field": "sources", "message": "more than 200 MB of sources: expect a long first build"}
        )
    minutes = round(est_chunks / EMBED_CHUNKS_PER_SECOND / 60 + 0.05 * math.ceil(len(items) / 50), 1)
    return {
        "is_valid": not errors,
        "errors": errors,
        "warnings": warnings,
        "estimated_chunks": est_chunks,
        "estimated_duration_minutes": max(0.1, minutes),
    }


def _ocr_problems(runtime: Runtime, items: list[SourceItem]) -> list[dict[str, str]]:
    """Image sources need OCR on and Tesseract installed: say so before the build, not per document."""
    images = [i.filename or i.blob_key for i in items if i.media_type in IMAGE_MEDIA_TYPES]
    if not images:
        return []
    named = ", ".join(images[:5]) + (f" and {len(images) - 5} more" if len(images) > 5 else "")
    parse = runtime.settings.parse
    if not parse.ocr:
        reason = "OCR is off (LOREBASE_PARSE__OCR=false)"
    elif ocr.tesseract_version(parse.tesseract_cmd) is None:
        reason = ocr.missing_tesseract_message(parse.tesseract_cmd)
    else:
        return []
    return [{"field": "sources", "message": f"{len(images)} image file(s) need OCR ({named}): {reason}"}]


def validate(runtime: Runtime, p: Principal, draft_id: str) -> dict[str, Any]:
    return validate_draft(runtime, runtime.drafts.get(p.workspace_id, draft_id))


def finalize(
    runtime: Runtime, p: Principal, draft_id: str, *, not_before: datetime | None = None
) -> dict[str, Any]:
    """One transaction: KB ``processing``, documents ``pending``, pipeline ``queued``, jobs, draft gone.
    With ``not_before`` (``services.pipelines.scheduled_start``) the jobs wait until then.

    The draft is *taken* from the repository inside that transaction: in SQL the delete commits
    or rolls back with the KB; in Redis it is an atomic get-and-delete, so of two concurrent
    finalizes only one gets the draft (the other: 404), and it is put back if the KB fails.
    """
    report = validate(runtime, p, draft_id)  # an invalid draft is reported without touching it
    if not report["is_valid"]:
        raise InvalidInput("the draft is not valid", details=report["errors"], code="draft_invalid")
    taken: DraftRecord | None = None
    try:
        with runtime.db.session() as s:
            taken = runtime.drafts.take(p.workspace_id, draft_id, s)
            result = _create_kb(runtime, p, s, taken, scheduled_start(not_before))
    except BaseException:
        if taken is not None:
            runtime.drafts.put_back(taken)
        raise
    runtime.queue.notify()
    return result


def _create_kb(
    runtime: Runtime, p: Principal, s: Session, draft: DraftRecord, not_before: datetime | None
) -> dict[str, Any]:
    items = _items(draft.sources)
    report = validate_draft(runtime, draft, items)  # the draft as taken: it may have changed since
    if not report["is_valid"]:
        raise InvalidInput("the draft is not valid", details=report["errors"], code="draft_invalid")
    kb = KnowledgeBase(
        id=new_id(),
        workspace_id=p.workspace_id,
        name=draft.name,
        description=draft.description,
        config=with_dimensions(runtime, draft.config),
        status="processing",
        created_by=p.key_id,
    )
    quotas.check_new_in(runtime, s, p.workspace_id, items)
    s.add(kb)
    s.flush()
    s.add(live_row(kb))
    pipeline, _ = start_pipeline(s, runtime, kb, items, not_before=not_before)
    for src in _web_sources(draft.sources):
        # the minimum was checked when it was added: a setting changed since does not fail finalize
        every = parse_every(src.get("refresh_every"), minimum=1)
        create_source(
            s, runtime, kb, pipeline, src["url"], src["crawl"], source_id=src["id"], refresh_seconds=every
        )
    return {
        "kb_id": kb.id,
        "pipeline_id": pipeline.id,
        "status": "processing",
        "estimated_completion_minutes": report["estimated_duration_minutes"],
    }


def purge_expired(runtime: Runtime) -> int:
    """Expired SQL drafts; 0 with Redis, whose keys expire by themselves."""
    return runtime.drafts.purge_expired()


class PurgeExpiredDrafts:
    """Job handler of the periodic ``purge_drafts`` task (idempotent: a second run finds none)."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        purged = purge_expired(ctx.runtime)
        if purged:
            log.info("purged %d expired drafts", purged)

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        log.warning("purging expired drafts failed: %s", message)
