"""A Rich progress bar that follows a pipeline until it reaches a final state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from lorebase.services.pipelines import FINAL_PIPELINE


def follow(
    fetch: Callable[[], dict[str, Any]], *, interval: float = 0.5, quiet: bool = False
) -> dict[str, Any]:
    """Poll ``fetch()`` (a pipeline dict) until final; draw progress unless ``quiet``."""
    state = fetch()
    if quiet:
        while state["status"] not in FINAL_PIPELINE:
            time.sleep(interval)
            state = fetch()
        return state
    with Progress(
        TextColumn("[bold]{task.fields[phase]:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[message]}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("pipeline", total=100, phase=state["phase"], message=state.get("message") or "")
        while True:
            bar.update(
                task, completed=state["progress"], phase=state["phase"], message=state.get("message") or ""
            )
            if state["status"] in FINAL_PIPELINE:
                return state
            time.sleep(interval)
            state = fetch()
