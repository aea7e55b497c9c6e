"""A Rich progress bar that follows a pipeline's event stream until its ``end`` event.

It reads the same event log as ``GET /pipelines/{id}/events`` (``services.events``), so the
terminal shows what a browser shows: the bar moves on ``pipeline`` events, a document that fails
is named as it fails (``document`` events), and ``end`` carries the final state."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

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
    state = pipelines.get(rt, p, pipeline_id)
    seen = 0
    with Progress(
        TextColumn("[bold]{task.fields[phase]:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[message]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("pipeline", total=100, phase=state["phase"], message=state.get("message") or "")
        while True:
            batch, over = pipelines.events_since(rt, p, pipeline_id, seen)
            for event in batch:
                seen = event["id"]
                data = event["data"]
                if event["event"] == "document":
                    if data["status"] == "failed" and not quiet:
                        name = data.get("filename") or data.get("title") or data["document_id"]
                        bar.console.print(
                            f"[red]failed[/] {escape(str(name))}: {escape(str(data.get('error')))}"
                        )
                    continue
                state = data
                bar.update(
                    task, completed=data["progress"], phase=data["phase"], message=data.get("message") or ""
                )
            if over:
                return pipelines.get(rt, p, pipeline_id)
            if len(batch) < 500:
                time.sleep(interval)
