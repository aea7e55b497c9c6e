"""Pipeline status, its live events (SSE) and control, jobs and queue health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lorebase.api.deps import PrincipalDep, RuntimeDep
from lorebase.api.idempotency import IDEMPOTENT
from lorebase.errors import InvalidInput, NotFound
from lorebase.services import jobs, pipelines

router = APIRouter(prefix="/api/v1", tags=["pipelines"])

#: how often a stream looks for new events: the log is in the database, written by whichever
#: process ran the job, so polling it is what works the same in every deployment mode
EVENT_POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
#: event ids are a 32-bit ``INTEGER`` column: PostgreSQL refuses to compare it with a larger bound
MAX_EVENT_ID = 2**31 - 1


@router.get("/pipelines/{pipeline_id}")
def get_pipeline(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.get(runtime, p, pipeline_id)


def sse_message(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {json.dumps(event['data'])}\n\n"


@router.get(
    "/pipelines/{pipeline_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "nothing more to tell"}},
)
async def pipeline_events(
    pipeline_id: str,
    request: Request,
    runtime: RuntimeDep,
    p: PrincipalDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="resume after this event id")
    ] = None,
) -> Response:
    """Server-Sent Events: ``pipeline`` (the pipeline as ``GET /pipelines/{id}`` shows it),
    ``document`` (one document's transition) and ``end`` (the final state; the stream closes).

    Every event has an ``id``; reconnecting with ``Last-Event-ID`` (or ``?after=``) resumes after
    it, missing nothing and repeating nothing. Without either, the stream starts from the
    pipeline's first event. A pipeline already over with nothing new answers 204, which tells a
    browser's EventSource to stop reconnecting."""
    start = after or 0
    if last_event_id is not None and last_event_id.strip():
        try:
            start = int(last_event_id)
        except ValueError:
            raise InvalidInput("Last-Event-ID must be an event id (an integer)") from None
        if start < 0:
            raise InvalidInput("Last-Event-ID must not be negative")
        if start > MAX_EVENT_ID:  # beyond what the database can compare with
            raise InvalidInput("Last-Event-ID is not an event id of this pipeline")
    batch, over = await run_in_threadpool(pipelines.events_since, runtime, p, pipeline_id, start)
    if over and not batch:
        return Response(status_code=204)

    async def stream() -> AsyncIterator[str]:
        nonlocal batch, over
        yield "retry: 1000\n\n"
        seen, quiet = start, 0.0
        while True:
            for event in batch:
                yield sse_message(event)
                seen = event["id"]
            if over or await request.is_disconnected():
                return
            if not batch or len(batch) < 500:
                await asyncio.sleep(EVENT_POLL_SECONDS)
                quiet = 0.0 if batch else quiet + EVENT_POLL_SECONDS
                if quiet >= KEEPALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
            try:
                batch, over = await run_in_threadpool(pipelines.events_since, runtime, p, pipeline_id, seen)
            except NotFound:  # deleted meanwhile (with its KB): nothing more will come
                return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/pipelines/{pipeline_id}/cancel", dependencies=[IDEMPOTENT])
def cancel(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.cancel(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/pause", dependencies=[IDEMPOTENT])
def pause(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.pause(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/resume", dependencies=[IDEMPOTENT])
def resume(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.resume(runtime, p, pipeline_id)


@router.post("/pipelines/{pipeline_id}/retry", dependencies=[IDEMPOTENT])
def retry(pipeline_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return pipelines.retry(runtime, p, pipeline_id)


@router.get("/jobs")
def list_jobs(
    runtime: RuntimeDep,
    p: PrincipalDep,
    status: str | None = None,
    kb_id: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    return jobs.list_jobs(runtime, p, status=status, kb_id=kb_id, limit=limit, offset=offset)


@router.post("/jobs/{job_id}/retry", dependencies=[IDEMPOTENT])
def retry_job(job_id: str, runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return jobs.retry_job(runtime, p, job_id)


@router.get("/queue")
def queue(runtime: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return jobs.queue_stats(runtime, p)
