"""Live notices of pipelines: published on ``pipeline:{pipeline_id}`` through ``runtime.events``
(in-process, or Redis pub/sub in the scaled mode) at status changes (settled, paused, resumed,
cancelling, retried). They carry no guarantee and nothing depends on them; publishing is best
effort: a failed publish is logged and swallowed, so a Redis outage never fails a job or a
request. What watchers rely on is the durable event log, ``db/events.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lorebase.db.models import utcnow

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

log = logging.getLogger("lorebase.events")


def pipeline_channel(pipeline_id: str) -> str:
    return f"pipeline:{pipeline_id}"


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
