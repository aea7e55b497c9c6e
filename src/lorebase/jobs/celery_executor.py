"""The Celery executor (``LOREBASE_EXECUTOR=celery``): Celery delivers job ids, the job table decides.

A message names one job (``lorebase.run_job(job_id)``); the worker claims that job by the same
rules and leases as the embedded executor (``JobQueue.claim(job_id=…)``) and runs it through
the same ``EmbeddedExecutor.run_job`` (heartbeats, fencing, retries with backoff, dead letter).
A message for a job that is no longer pending does nothing; one for a job that cannot run yet
(paused pipeline, taken concurrency key) asks for another message a little later.

Delivery settings: JSON only; ``acks_late`` with ``reject_on_worker_lost`` and a prefetch of 1,
so a message leaves the broker only once its job has ended; soft and hard time limits per attempt
(``jobs.time_limit_seconds``; a soft limit ends the attempt as a transient error, so the job is
retried and a crawl resumes from its checkpoint). One queue per kind of job
(``<prefix>.crawl``, ``<prefix>.process``, ``<prefix>.embed``): ``lorebase worker --queues``
chooses which a worker takes, so each kind scales on its own. Redis is the default broker
(``LOREBASE_REDIS_URL``); RabbitMQ works with ``LOREBASE_BROKER_URL=amqp://…``.

Periodic maintenance needs no beat: every worker process runs the reaper and the pipeline sweep
in its maintenance thread, and a dispatcher (``jobs.dispatch``) that re-sends due or lost jobs.
Each pool process (prefork) builds its own runtime after the fork, in ``worker_process_init``;
the parent process only runs the migrations and supervises. Each pool process has its own parse
pool (``jobs.parse_processes``), as an embedded worker has.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any

import billiard.process
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down

from lorebase.jobs.delivery import close_worker_state, run_delivered, worker_state
from lorebase.jobs.dispatch import Due, Sender, queue_name
from lorebase.jobs.registry import Registry
from lorebase.settings import Settings

log = logging.getLogger("lorebase.celery")

TASK_NAME = "lorebase.run_job"
#: sent by a shutting-down worker to its pool processes (billiard uses SIGUSR1 for soft limits)
DRAIN_SIGNAL = signal.SIGUSR2
#: how long the hard limit lets an attempt overrun its soft limit before the pool kills it
HARD_LIMIT_GRACE_SECONDS = 60.0


def make_celery(settings: Settings) -> Celery:
    broker = settings.resolved_broker_url
    if not broker:
        raise ValueError("LOREBASE_EXECUTOR=celery needs LOREBASE_REDIS_URL or LOREBASE_BROKER_URL")
    app = Celery("lorebase", broker=broker, set_as_current=False)
    soft = settings.jobs.time_limit_seconds
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=soft,
        task_time_limit=soft + HARD_LIMIT_GRACE_SECONDS,
        task_default_queue=queue_name(settings.queue_prefix, "process"),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # Redis: an unacknowledged message (its worker died) comes back after this long; the job
        # itself is recovered sooner, by the reaper and the dispatcher, so this only bounds how
        # long a dead worker's message lingers
        broker_transport_options={"visibility_timeout": soft + 2 * HARD_LIMIT_GRACE_SECONDS},
    )
    app.task(name=TASK_NAME, ignore_result=True)(run_job)
    return app


def celery_sender(app: Celery, prefix: str, registry: Registry) -> Sender:
    """A ``Sender`` that publishes one ``run_job`` message per job on its kind's queue."""

    def send(jobs: Sequence[Due]) -> None:
        with app.producer_or_acquire() as producer:
            for job_id, job_type, pool in jobs:
                queue = queue_name(prefix, registry.kind_of(job_type), pool)
                app.send_task(TASK_NAME, args=[job_id], queue=queue, producer=producer)

    return send


# -- the worker side --------------------------------------------------------------------------
@worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    # Pool processes are billiard's daemonic children; multiprocessing refuses children to a
    # daemon and will not pickle billiard's authkey when it spawns. Both are lifted here so the
    # parse pool runs as in every other mode: a hostile file that crashes or hangs a parser
    # costs a parse process, and the job isolates the document (the pool is shut down with
    # this process's runtime).
    me = multiprocessing.current_process()
    me._config.pop("daemon", None)  # type: ignore[attr-defined]
    me._config["authkey"] = multiprocessing.process.AuthenticationString(os.urandom(32))  # type: ignore[attr-defined]
    executor = worker_state().executor  # warm: load the runtime before the first message
    assert executor is not None
    signal.signal(DRAIN_SIGNAL, lambda *_: executor.drain())
    # SIGTERM sent to the whole process group (systemd's default, `kill -- -PGID`) drains too,
    # instead of ending this process mid-job: the worker's warm shutdown then waits for it
    signal.signal(signal.SIGTERM, lambda *_: executor.drain())


@worker_shutting_down.connect
def _drain_pool(**_: Any) -> None:
    """SIGTERM on the worker (warm shutdown): Celery waits for running tasks; tell the pool
    processes to have their jobs checkpoint and release, as an embedded worker's drain does."""
    for child in billiard.process.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, DRAIN_SIGNAL)


@worker_process_shutdown.connect
def _close_pool_process(**_: Any) -> None:
    close_worker_state()


def run_job(job_id: str) -> str:
    """The task: claim the job named by the message and run it (see ``jobs.delivery``)."""
    return run_delivered(job_id)


def worker_argv(
    settings: Settings,
    *,
    concurrency: int,
    kinds: Sequence[str],
    name: str | None = None,
    pool: str | None = None,
) -> list[str]:
    """The ``celery worker`` command line for ``lorebase worker``."""
    node = name or f"lorebase-{os.getpid()}@{socket.gethostname()}"
    return [
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--queues={','.join(queue_name(settings.queue_prefix, k, pool) for k in kinds)}",
        f"--hostname={node}",
        "--without-gossip",
        "--without-mingle",
        "--prefetch-multiplier=1",
    ]


def run_worker(
    settings: Settings, *, concurrency: int, kinds: Sequence[str], pool: str | None = None
) -> None:
    """Run a Celery worker in this process until it is stopped (SIGTERM: warm shutdown); with
    ``pool``, on that pool's queues."""
    app = make_celery(settings)
    app.worker_main(worker_argv(settings, concurrency=concurrency, kinds=kinds, pool=pool))
