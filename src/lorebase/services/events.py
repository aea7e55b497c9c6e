"""Live pipeline events: what changed, published on ``pipeline:{pipeline_id}`` through
``runtime.events`` (in-process, or Redis pub/sub in the scaled mode).

Events mark status changes only (settled, paused, resumed, cancelling, retried), never per chunk:
the database stays the source of truth and a consumer (the SSE endpoint) re-reads the pipeline
when told something moved. Publishing is best effort: a failed publish is logged and swallowed,
so a Redis outage never fails a job or a request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lorebase.db.models import utcnow

if TYPE_CHECKING:
    from lorebase.db.models import Pipeline
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.events")


def pipeline_channel(pipeline_id: str) -> str:
    return f"pipeline:{pipeline_id}"


def pipeline_state(p: Pipeline) -> dict[str, Any]:
    """The small part of a pipeline an event carries (the full one is ``GET /pipelines/{id}``)."""
    return {
        "kb_id": p.kb_id,
        "status": p.status,
        "phase": p.phase,
        "progress": p.progress,
        "message": p.message,
        "error": p.error,
    }


def publish_pipeline(runtime: Runtime, pipeline_id: str, kind: str, data: dict[str, Any]) -> None:
    """Publish ``{"kind", "pipeline_id", "at", **data}``; never raises."""
    bus = getattr(runtime, "events", None)
    if bus is None:
        return
    event = {"kind": kind, "pipeline_id": pipeline_id, "at": utcnow().isoformat(), **data}
    try:
        bus.publish(pipeline_channel(pipeline_id), event)
    except Exception as exc:  # best effort by design: see the module docstring
        log.warning("could not publish %s event of pipeline %s: %s", kind, pipeline_id, exc)
