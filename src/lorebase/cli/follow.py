"""A Rich progress bar that follows a pipeline's event stream until its ``end`` event.

It reads the same event log as ``GET /pipelines/{id}/events`` (``services.events``), so the
terminal shows what a browser shows; the bar itself is ``progress.py``'s, which the remote CLI
feeds from the server's SSE stream."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from lorebase.cli.progress import PipelineBar
from lorebase.runtime import Runtime
from lorebase.services import pipelines
from lorebase.services.auth import Principal


def follow(
    rt: Runtime,
    p: Principal,
    pipeline_id: str,
    *,
    interval: float = 0.25,
    quiet: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Follow the pipeline's events until it has ended; returns its final state.

    ``quiet`` draws nothing (the events are still read, so the result is the same)."""
    seen = 0
    with PipelineBar(pipelines.get(rt, p, pipeline_id), quiet=quiet, console=console) as bar:
        while True:
            batch, over = pipelines.events_since(rt, p, pipeline_id, seen)
            for event in batch:
                seen = event["id"]
                bar.show(event["event"], event["data"])
            if over:
                return pipelines.get(rt, p, pipeline_id)
            if len(batch) < 500:
                time.sleep(interval)
