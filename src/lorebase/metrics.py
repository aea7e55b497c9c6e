"""Prometheus metrics: process-local instruments plus the shared truth read from the database.

Two kinds of figures, because two kinds of truth exist:

* **Process-local instruments** (``REGISTRY``): what *this* process did and how long it took:
  job durations, embedding batch latency, crawl fetches. They are observed where the work
  happens (the executor, the embedder adapter, the crawler) and live in a registry of their
  own, not prometheus_client's global one, so importing lorebase never adds series to someone
  else's default registry. In the scaled mode each ``lorebase worker`` has its own (served by
  ``lorebase worker --metrics-port``); the API's ``/metrics`` holds only the API process's.
* **The database** (``DatabaseCollector``): jobs by status and type, queue depth, live leases and
  workers, pipelines by status and duration, chunks embedded. Read at scrape time from the job
  and pipeline tables, so every API node reports the same cluster-wide numbers whichever
  process did the work, and nothing drifts across restarts.

``build_registry(db)`` joins both for one app; each app gets its own registry, so several
apps in one process (tests) never clash over collector names. ``lorebase serve`` runs its
workers in a child process (``assembly.WorkerChild``): ``build_registry(db, also=...)`` adds that
child's instruments to the server's own (:class:`MergedInstruments`), so the embedded mode still
has one ``/metrics`` with everything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lorebase.db.engine import Database
from lorebase.db.models import Job, Pipeline, utcnow
from lorebase.db.states import PIPELINE_FINAL

log = logging.getLogger("lorebase.metrics")

#: the process-local instruments (one per process, whatever number of apps it runs)
REGISTRY = CollectorRegistry(auto_describe=True)

JOB_DURATION = Histogram(
    "lorebase_job_duration_seconds",
    "Wall time of one job attempt run by this process, by job type and outcome.",
    ["type", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
EMBED_BATCH = Histogram(
    "lorebase_embedding_batch_seconds",
    "Time to embed one batch of texts in this process, by model and slot (ingest or query).",
    ["model", "slot"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
EMBEDDED_TEXTS = Counter(
    "lorebase_embedder_texts",
    "Texts embedded by this process, by model and slot.",
    ["model", "slot"],
    registry=REGISTRY,
)
CRAWL_PAGES = Counter(
    "lorebase_crawl_pages_fetched",
    "Page requests the crawler in this process completed, by outcome (ok, not_modified, gone, "
    "skipped, failed, retry).",
    ["outcome"],
    registry=REGISTRY,
)


def build_registry(db: Database, *, also: Callable[[], str] | None = None) -> CollectorRegistry:
    """A registry for one app: the database's figures, this process's instruments, and the
    standard process/platform/GC collectors (fresh instances, so nothing global). ``also`` gives
    another process's instruments in the text format (``serve``'s worker process), added to ours."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db))
    # a registry is itself a collector
    registry.register(REGISTRY if also is None else MergedInstruments(REGISTRY, also))
    ProcessCollector(registry=registry)  # each registers itself with the registry it is given
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MergedInstruments(Collector):
    """This process's instruments plus another process's, read from its text exposition.

    The instruments are counters and histograms, which add: a series both processes have is
    summed (its ``_created`` time is the earlier one), so the scrape stays valid (one family per
    name) and reads as if one process had done all the work. An unreadable or empty text adds
    nothing: the other process may be restarting."""

    def __init__(self, own: CollectorRegistry, other: Callable[[], str]) -> None:
        self.own, self.other = own, other

    def collect(self) -> Iterator[Metric]:
        families = {f.name: f for f in self.own.collect()}
        try:
            theirs = list(text_string_to_metric_families(self.other()))
        except Exception:  # a partial or garbled answer: ours alone
            log.warning("could not read the worker process's metrics", exc_info=True)
            theirs = []
        for family in theirs:
            mine = families.get(family.name)
            if mine is None:
                families[family.name] = family
                continue
            index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(mine.samples)}
            for sample in family.samples:
                at = index.get((sample.name, tuple(sorted(sample.labels.items()))))
                if at is None:
                    mine.samples.append(sample)
                    continue
                old = mine.samples[at]
                merged = (
                    min(old.value, sample.value)
                    if sample.name.endswith("_created")
                    else old.value + sample.value
                )
                mine.samples[at] = old._replace(value=merged)
        yield from families.values()


class DatabaseCollector(Collector):
    """Reads the job and pipeline tables at scrape time (a few aggregate queries).

    If the database cannot be read, the scrape still answers, with ``lorebase_database_up 0``
    and without the database's families, so an alert can tell "down" from "no data".
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("lorebase_database_up", "1 when /metrics could read the database.")
        try:
            with self.db.read_session() as s:
                families = list(self._families(s))
        except Exception as exc:  # a scrape must never fail because of the database
            log.warning("metrics: database not readable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, s: Session) -> Iterator[Metric]:
        yield from self._jobs(s)
        yield from self._leases(s)
        yield from self._pipelines(s)

    @staticmethod
    def _jobs(s: Session) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "lorebase_jobs", "Jobs in the job table by status and type.", labels=["status", "type"]
        )
        for status, job_type, n in s.execute(
            select(Job.status, Job.type, func.count()).group_by(Job.status, Job.type)
        ).all():
            jobs.add_metric([status, job_type], n)
        yield jobs
        depth = GaugeMetricFamily(
            "lorebase_queue_depth",
            "Pending jobs due now (run_at passed), by type: work waiting for a worker.",
            labels=["type"],
        )
        for job_type, n in s.execute(
            select(Job.type, func.count())
            .where(Job.status == "pending", Job.run_at <= utcnow())
            .group_by(Job.type)
        ).all():
            depth.add_metric([job_type], n)
        yield depth

    @staticmethod
    def _leases(s: Session) -> Iterator[Metric]:
        now = utcnow()
        rows = s.execute(
            select(Job.lease_owner, Job.heartbeat_at).where(
                Job.status == "running", Job.lease_expires_at > now
            )
        ).all()
        leases = GaugeMetricFamily("lorebase_job_leases_live", "Running jobs whose lease has not expired.")
        leases.add_metric([], len(rows))
        yield leases
        workers = GaugeMetricFamily(
            "lorebase_workers_live",
            "Worker processes holding at least one live lease (idle workers hold none and are not counted).",
        )
        workers.add_metric([], len({worker_of(owner) for owner, _ in rows if owner}))
        yield workers
        beats = [beat for _, beat in rows if beat is not None]
        age = GaugeMetricFamily(
            "lorebase_heartbeat_age_seconds",
            "Seconds since the most recent heartbeat of a running job (NaN when none runs).",
        )
        age.add_metric([], (now - max(beats)).total_seconds() if beats else math.nan)
        yield age

    def _pipelines(self, s: Session) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "lorebase_pipelines", "Pipeline executions by status.", labels=["status"]
        )
        for status, n in s.execute(select(Pipeline.status, func.count()).group_by(Pipeline.status)).all():
            by_status.add_metric([status], n)
        yield by_status
        duration = SummaryMetricFamily(
            "lorebase_pipeline_duration_seconds",
            "Start-to-end time of finished pipelines, by final status.",
            labels=["status"],
        )
        seconds = self._seconds_between(s, Pipeline.started_at, Pipeline.finished_at)
        for status, n, total in s.execute(
            select(Pipeline.status, func.count(), func.coalesce(func.sum(seconds), 0))
            .where(Pipeline.status.in_(PIPELINE_FINAL), Pipeline.finished_at.is_not(None))
            .where(Pipeline.started_at.is_not(None))
            .group_by(Pipeline.status)
        ).all():
            duration.add_metric([status], count_value=n, sum_value=float(total))
        yield duration
        sums = s.execute(
            select(
                func.coalesce(func.sum(Pipeline.chunks_embedded), 0),
                func.coalesce(func.sum(Pipeline.chunks_indexed), 0),
                func.coalesce(func.sum(Pipeline.pages_fetched), 0),
            )
        ).one()
        names = (
            ("lorebase_chunks_embedded", "Chunks embedded by all pipelines (KBs deleted: dropped)."),
            ("lorebase_chunks_indexed", "Chunks indexed by all pipelines (KBs deleted: dropped)."),
            ("lorebase_pages_fetched", "Web pages fetched by all pipelines (KBs deleted: dropped)."),
        )
        for (name, doc), value in zip(names, sums, strict=True):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(value))
            yield family

    @staticmethod
    def _seconds_between(s: Session, start: Any, end: Any) -> Any:
        """``end - start`` in seconds, in the database's own dialect."""
        if s.get_bind().dialect.name == "postgresql":
            return func.extract("epoch", end - start)
        return (func.julianday(end) - func.julianday(start)) * 86400.0


def worker_of(lease_owner: str) -> str:
    """The process part (``host:pid``) of a lease owner ``host:pid:name-thread``."""
    host, _, rest = lease_owner.partition(":")
    pid, _, _ = rest.partition(":")
    return f"{host}:{pid}"
