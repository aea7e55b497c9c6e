"""The RQ executor (``LOREBASE_EXECUTOR=rq``) for teams already on RQ: RQ delivers, the job table decides.

Like the Celery executor, a message (an RQ job calling ``run_job(job_id)``) only names a job of
the job table; the worker claims it by the same rules and runs it with the same leases,
heartbeats and retries (``jobs.delivery``). Queues are ``<prefix>.crawl``, ``<prefix>.process``
and ``<prefix>.embed`` on ``LOREBASE_REDIS_URL``.

``lorebase worker`` runs an RQ ``SimpleWorker``: jobs run in the worker process itself, where
the runtime and the embedding model are loaded once (RQ's default forks a new process per job,
which would load the model for every document). ``jobs.time_limit_seconds`` is the RQ job
timeout: the attempt is interrupted and retried, and a crawl resumes from its checkpoint.
RQ keeps no results: the job table has them.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from rq import Queue, SimpleWorker

from lorebase.jobs.delivery import close_worker_state, run_delivered, worker_state
from lorebase.jobs.dispatch import Due, Sender, queue_name
from lorebase.jobs.registry import Registry
from lorebase.settings import Settings


def _redis(settings: Settings) -> Redis:
    if not settings.redis_url:
        raise ValueError("LOREBASE_EXECUTOR=rq needs LOREBASE_REDIS_URL")
    return Redis.from_url(settings.redis_url)


def rq_sender(settings: Settings, registry: Registry) -> Sender:
    connection = _redis(settings)
    timeout = int(settings.jobs.time_limit_seconds)
    queues: dict[str, Queue] = {}

    def send(jobs: Sequence[Due]) -> None:
        with connection.pipeline() as pipe:
            for job_id, job_type, pool in jobs:
                name = queue_name(settings.queue_prefix, registry.kind_of(job_type), pool)
                queue = queues.setdefault(name, Queue(name, connection=connection))
                queue.enqueue(
                    run_job, job_id, job_timeout=timeout, result_ttl=0, failure_ttl=86400, pipeline=pipe
                )
            pipe.execute()

    return send


def run_job(job_id: str) -> str:
    """The RQ job: claim the job named by the message and run it."""
    return run_delivered(job_id)


def run_worker(settings: Settings, *, kinds: Sequence[str], pool: str | None = None) -> None:
    """Run an RQ worker in this process until SIGTERM/SIGINT (RQ lets the running job end); with
    ``pool``, on that pool's queues."""
    connection = _redis(settings)
    queues = [Queue(queue_name(settings.queue_prefix, k, pool), connection=connection) for k in kinds]
    worker_state()  # the runtime and its threads, before the first message
    try:
        SimpleWorker(queues, connection=connection).work(with_scheduler=False)
    finally:
        close_worker_state()
