"""The Rich progress bar of a pipeline, drawn from its events (``pipeline``, ``document``,
``end``): the same events whether they are read from the local event log (``follow.py``) or
from the server's SSE stream (``remote.py``), so the terminal shows the same thing either way."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


class PipelineBar:
    """The bar moves on ``pipeline`` events; a document that fails is named as it fails.
    ``quiet`` draws nothing."""

    def __init__(self, state: dict[str, Any], *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<10}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[message]}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        self.task = self.progress.add_task(
            "pipeline", total=100, phase=state.get("phase") or "", message=state.get("message") or ""
        )

    def __enter__(self) -> PipelineBar:
        self.progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(kind, exc, tb)

    def show(self, event: str, data: dict[str, Any]) -> None:
        if event == "document":
            if data.get("status") == "failed" and not self.quiet:
                name = data.get("filename") or data.get("title") or data.get("document_id")
                self.progress.console.print(
                    f"[red]failed[/] {escape(str(name))}: {escape(str(data.get('error')))}"
                )
            return
        self.progress.update(
            self.task,
            completed=data.get("progress") or 0,
            phase=data.get("phase") or "",
            message=data.get("message") or "",
        )
