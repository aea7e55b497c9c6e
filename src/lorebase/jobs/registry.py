"""The task registry: what a job type *is*, read by every part of the engine.

A job type is declared once, as a :class:`TaskSpec` in its own file under ``lorebase/tasks/``:
its name, its handler, the kind of queue it is delivered on, its priority, whether it is
resumable, its retry policy and its concurrency key. ``lorebase.tasks.REGISTRY`` holds them all.
The engine knows no task by name: the embedded executor takes the handlers of the registry it
is given, the dispatcher and the Celery/RQ senders route by the kind the registry says, and the
reaper hands a dead job to its task's ``on_failure``.

A handler is named by its import path (``"lorebase.pipeline.process:ProcessDocument"``) and
loaded when an executor first needs it. So the declarations sit below the code that runs them:
a stage or a service can enqueue any task (and know its priority or its queue) without
importing the code that runs it, and no import cycle can form through the registry.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from lorebase.jobs.retry import DEFAULT_POLICY, RetryPolicy

if TYPE_CHECKING:
    from lorebase.jobs.context import JobContext
    from lorebase.jobs.queue import JobQueue
    from lorebase.settings import Settings

#: the kinds of queue a job is delivered on (the broker executors' queues; ``--queues``)
KINDS = ("crawl", "process", "embed")


class Handler(Protocol):
    """A job type's behaviour. ``run`` must be idempotent: it may run more than once."""

    def run(self, ctx: JobContext[Any]) -> None: ...

    def on_failure(self, ctx: JobContext[Any], session: Session, message: str, kind: str) -> None:
        """The job ended ``failed`` or ``dead``: record it on what the job was working on, in
        ``session`` (the transaction that ends the job)."""
        ...


def _no_key(_: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One job type, declared once (``lorebase/tasks/<name>.py``)."""

    name: str
    #: ``"package.module:Class"``: a class whose instances are :class:`Handler`
    handler: str
    #: the queue kind it is delivered on: ``crawl``, ``process`` or ``embed``
    kind: str
    #: claim order: higher first (uploads 10 > crawls 5; the embedder 20 keeps the model fed)
    priority: int
    #: saves checkpoints or progress as it goes: a drain (SIGTERM) may stop it between batches,
    #: and a lost attempt that moved it on does not count (``jobs/retry.py``)
    resumable: bool = False
    retry: RetryPolicy = DEFAULT_POLICY
    #: at most one running job per key (``None``: no limit), from the job's payload
    concurrency_key: Callable[[Mapping[str, Any]], str | None] = _no_key
    #: what it is for, in a sentence (the jobs README and ``lorebase jobs`` show it)
    summary: str = ""
    #: a periodic task: how often it runs, in seconds, from the settings (``jobs/scheduler.py``
    #: queues one job per period across all processes); None: queued by its callers only
    every: Callable[[Settings], float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: unknown queue kind {self.kind!r}; use one of {KINDS}")
        if ":" not in self.handler:
            raise ValueError(f"task {self.name}: handler {self.handler!r} is not 'module:Class'")

    def load_handler(self) -> Handler:
        module, _, name = self.handler.partition(":")
        handler: Handler = getattr(importlib.import_module(module), name)()
        return handler

    def enqueue(
        self,
        session: Session,
        queue: JobQueue,
        settings: Settings,
        *,
        workspace_id: str,
        payload: dict[str, Any],
        pipeline_id: str | None = None,
        kb_id: str | None = None,
        document_id: str | None = None,
        priority: int | None = None,
        dedupe_key: str | None = None,
        run_at: datetime | None = None,
    ) -> str | None:
        """Insert a pending job of this type in the caller's transaction (see ``JobQueue.enqueue``:
        None when a pending job with the same ``dedupe_key`` will do the work)."""
        return queue.enqueue(
            session,
            **self.row_values(settings, payload=payload, priority=priority),
            workspace_id=workspace_id,
            pipeline_id=pipeline_id,
            kb_id=kb_id,
            document_id=document_id,
            dedupe_key=dedupe_key,
            run_at=run_at,
        )

    def row_values(
        self, settings: Settings, *, payload: dict[str, Any], priority: int | None = None
    ) -> dict[str, Any]:
        """The columns this declaration decides (type, priority, attempts, concurrency key),
        for ``JobQueue.enqueue`` or a bulk ``JobQueue.job_row``."""
        return {
            "type": self.name,
            "payload": payload,
            "priority": self.priority if priority is None else priority,
            "max_attempts": self.retry.max_attempts(settings),
            "concurrency_key": self.concurrency_key(payload),
        }


@dataclass(slots=True)
class Registry:
    """The job types a process knows, by name; handlers are loaded once, on first use."""

    specs: dict[str, TaskSpec]
    _handlers: dict[str, Handler] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, specs: Iterable[TaskSpec]) -> Registry:
        by_name: dict[str, TaskSpec] = {}
        for spec in specs:
            if spec.name in by_name:
                raise ValueError(f"task {spec.name} is declared twice")
            by_name[spec.name] = spec
        return cls(by_name)

    @classmethod
    def of_handlers(cls, handlers: Mapping[str, Handler], *, kind: str = "process") -> Registry:
        """Ad-hoc job types around handler objects (tests, benchmarks): one ``kind``, priority 0."""
        registry = cls({name: TaskSpec(name, f"{__name__}:_Given", kind, 0) for name in handlers})
        registry._handlers.update(handlers)
        return registry

    def __getitem__(self, name: str) -> TaskSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise KeyError(f"unknown job type {name!r}; known: {', '.join(self.specs)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self.specs.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def kinds(self) -> tuple[str, ...]:
        """The queue kinds of these tasks, in the order of :data:`KINDS`."""
        used = {spec.kind for spec in self.specs.values()}
        return tuple(k for k in KINDS if k in used)

    def kind_of(self, name: str) -> str:
        """The queue kind of a job type (``process`` for one this registry does not know)."""
        spec = self.specs.get(name)
        return spec.kind if spec is not None else "process"

    def of_kinds(self, kinds: Iterable[str]) -> tuple[str, ...]:
        """The job types delivered on these queue kinds."""
        wanted = set(kinds)
        return tuple(name for name, spec in self.specs.items() if spec.kind in wanted)

    def handler(self, name: str) -> Handler:
        with self._lock:
            if name not in self._handlers:
                self._handlers[name] = self[name].load_handler()
            return self._handlers[name]

    def parse_kinds(self, value: str | None) -> tuple[str, ...]:
        """``"crawl,embed"`` → ("crawl", "embed"); None or empty → every kind. Unknown kinds raise."""
        every = self.kinds()
        if not value:
            return every
        kinds = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
        unknown = [k for k in kinds if k not in every]
        if unknown or not kinds:
            raise ValueError(f"unknown queue kind(s) {', '.join(unknown)}; use any of {', '.join(every)}")
        return kinds


class _Given:
    """The handler path of :meth:`Registry.of_handlers` types (their handlers are given, never
    loaded)."""
