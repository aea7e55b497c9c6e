"""Job queue overhead: no-op job throughput and enqueue→start latency, per executor.

What the job machinery itself costs, with handlers that do nothing, so that the figures are the
queue's (claim, lease, fenced success, wake-ups) and not the work's. For the **embedded
executor** (worker threads claiming jobs from the SQLite job table), each measurement on a
fresh temp data dir, a ``Runtime`` built from ``Settings`` as in the other benchmarks (the
embedding model is never loaded) and an ``EmbeddedExecutor`` whose handler table holds only a
no-op handler, ``--workers`` threads (default 2, as ``serve`` and ``lorebase worker``):

* throughput: N no-op jobs (default 2000; ``--smoke``: 200) are inserted in one bulk
  transaction, then the executor starts; the clock runs from ``start()`` to the poll (every
  10 ms, one statement on a plain DB-API connection) that sees all N ``succeeded``.
  Reported as jobs/s and as CPU ms per job (this process, all threads, over that time);
* latency: jobs are enqueued one at a time on a steady schedule (default every 20 ms, 300 jobs;
  ``--smoke``: 50) while the workers are idle, each in its own transaction. The enqueue time is
  taken right after that transaction commits (the session's ``after_commit`` hook), the start
  time by the handler (``time.perf_counter()`` first thing in ``run``); latency = start -
  enqueue, p50 and p99 (nearest rank). Side by side:

  - notified: the executor runs in this process and the enqueuing code calls
    ``runtime.queue.notify()`` after the commit, as the API's services do: idle workers wake at once;
  - polling: the executor runs in **another process** on the same data dir (SQLite file), as
    ``lorebase worker`` does; it only sees new jobs when an idle worker's ``jobs.poll_seconds``
    wait runs out (default 0.5 s, ``--poll-seconds``). The enqueuing code is the same (its
    ``notify()`` reaches no worker); the child reports its start times at the end. Both
    processes read the same clock: ``perf_counter`` is ``CLOCK_MONOTONIC`` on Linux (checked).

  A few warm-up jobs (not counted) go first in each setting.

For **bare Celery on Redis** (``--executor celery``, the reference the embedded executor is held
to): a plain Celery app (Celery's defaults: early acks, prefetch multiplier 4), a prefork worker
with ``--workers`` processes (this script with a hidden ``--celery-worker`` flag), the same N
no-op tasks, each an ``INCR`` of a Redis counter so that this process sees when all have run.
The worker starts on a warm-up queue; the N messages are published on a queue it does not
consume yet, and the clock runs from the ``add_consumer`` that makes it consume them to the poll
(every 10 ms) that sees the counter at N, as the embedded clock runs from ``start()`` on N
pending jobs. CPU: the worker and its pool processes (``/proc``; Redis's own is not counted,
SQLite's is, in the embedded figure). No latency settings for Celery.

Executors are measured by one function each (``EXECUTORS``), one after the other in one run:
``--executor embedded,celery`` or ``--executor all``. Prints one JSON line on stdout, each
executor's figures under its name (the same throughput keys), and
``embedded_over_celery_throughput`` when both ran; progress goes to stderr. No target is
enforced: the exit status is 0 whatever the figures.

    .venv/bin/python benchmarks/queue.py [--executor embedded|celery|embedded,celery|all]
                                         [--jobs 2000] [--latency-jobs 300] [--interval 0.02]
                                         [--workers 2] [--poll-seconds 0.5]
                                         [--redis-url redis://127.0.0.1:6379/0] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# This file is named like the stdlib's ``queue`` module and Python puts its directory first on the
# import path: drop it, so that ``import queue`` (concurrent.futures, multiprocessing) gets the stdlib's.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NOOP = "bench_noop"
WARM_UP = 5
FINAL = ("succeeded", "failed", "cancelled", "dead")


def log(*args: Any) -> None:
    print("[queue]", *args, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (as benchmarks/finalize.py)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [1000 * v for v in latencies_s]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2),
        "mean": round(statistics.fmean(ms), 2),
        "min": round(min(ms), 2),
    }


# -- handlers ------------------------------------------------------------------------------------
class NoopHandler:
    """Does nothing: what is measured is the executor around it."""

    def run(self, ctx: Any) -> None:
        pass

    def on_failure(self, ctx: Any, session: Any, message: str, kind: str) -> None:
        pass


class StampHandler(NoopHandler):
    """Records when each job started (``perf_counter``), by job id."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def run(self, ctx: Any) -> None:
        self.started[ctx.job.id] = time.perf_counter()


# -- plumbing ------------------------------------------------------------------------------------
@contextmanager
def fresh_runtime(tag: str, poll_seconds: float | None = None) -> Iterator[Any]:
    """A Runtime on a new temp data dir (its own SQLite file), closed and removed afterwards."""
    from lorebase.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix=f"lorebase-bench-queue-{tag}-") as tmp:
        runtime = Runtime(make_settings(Path(tmp) / "data", poll_seconds))
        try:
            yield runtime
        finally:
            runtime.close()


def make_settings(data_dir: Path, poll_seconds: float | None) -> Any:
    from lorebase.settings import Settings

    jobs = {} if poll_seconds is None else {"poll_seconds": poll_seconds}
    return Settings(
        data_dir=data_dir,
        database_url=None,  # this temp dir's SQLite file, whatever the environment says
        redis_url=None,
        executor="embedded",
        jobs=jobs,
        _env_file=None,
    )


def workspace_id(runtime: Any) -> str:
    from lorebase.services.auth import local_principal

    return str(local_principal(runtime.db).workspace_id)


def wait_until_final(runtime: Any, n: int, timeout: float, every: float = 0.01) -> float:
    """Poll until ``n`` jobs ended; the time that poll saw it. Fails when a no-op did not succeed.

    One statement on a plain DB-API connection (no ORM: polling must not take the GIL from the
    workers), from **the engine's own DB-API module**: when the stdlib's ``sqlite3`` cannot load
    extensions the engine uses ``pysqlite3``, a second SQLite library in the process, and closing a
    stdlib connection then deletes the WAL under the engine's connections (their later commits are
    invisible to new connections until the engine closes; seen while writing this benchmark)."""
    dbapi = runtime.db.engine.dialect.loaded_dbapi
    conn = dbapi.connect(
        str(Path(runtime.settings.data_dir) / "lorebase.db"), isolation_level=None, check_same_thread=False
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            counts = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
            if sum(counts.get(st, 0) for st in FINAL) >= n:
                now = time.perf_counter()
                if counts.get("succeeded", 0) < n:
                    raise SystemExit(f"no-op jobs did not all succeed: {counts}")
                return now
            if time.monotonic() > deadline:
                raise SystemExit(f"jobs did not finish within {timeout:.0f}s: {counts}")
            time.sleep(every)
    finally:
        conn.close()


def enqueue_one(runtime: Any, ws: str) -> tuple[str, float, float]:
    """One job in its own transaction, as a service enqueues: (id, the time of the commit, seconds
    the transaction took, begin → commit).

    The commit time is taken by the session's ``after_commit`` hook, i.e. right after SQLite's
    COMMIT and before the connection goes back to the pool (its reset is not counted as latency).
    Then ``notify()``, as the services do: in-process idle workers wake at once; with the workers
    in another process it reaches nobody."""
    from sqlalchemy import event

    committed: list[float] = []
    t = time.perf_counter()
    with runtime.db.session() as s:
        event.listen(s, "after_commit", lambda _s: committed.append(time.perf_counter()))
        job_id = runtime.queue.enqueue(s, type=NOOP, workspace_id=ws)
    runtime.queue.notify()
    assert job_id is not None and committed
    return job_id, committed[0], committed[0] - t


def trickle(runtime: Any, ws: str, n: int, interval: float) -> tuple[dict[str, float], list[float]]:
    """Enqueue ``n`` jobs one at a time on a fixed schedule (no drift): the commit times by job
    id, and how long each enqueue transaction took."""
    enqueued: dict[str, float] = {}
    took: list[float] = []
    due = time.perf_counter()
    for _ in range(n):
        due += interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        job_id, committed, seconds = enqueue_one(runtime, ws)
        enqueued[job_id] = committed
        took.append(seconds)
    return enqueued, took


def latencies(enqueued: dict[str, float], started: dict[str, float]) -> list[float]:
    missing = set(enqueued) - set(started)
    if missing:
        raise SystemExit(f"{len(missing)} jobs have no start time")
    return [started[j] - enqueued[j] for j in enqueued]


#: what a latency measurement returns: enqueue→start latencies, enqueue transaction times (s)
Latency = tuple[list[float], list[float]]


# -- embedded executor ---------------------------------------------------------------------------
def embedded_throughput(n: int, workers: int) -> dict[str, Any]:
    """N no-op jobs enqueued in bulk, then drained by an executor started afterwards."""
    from sqlalchemy import insert

    from lorebase.db.models import Job
    from lorebase.jobs.executor import EmbeddedExecutor

    with fresh_runtime("throughput") as runtime:
        ws = workspace_id(runtime)
        t = time.perf_counter()
        with runtime.db.session() as s:
            s.execute(insert(Job), [runtime.queue.job_row(s, type=NOOP, workspace_id=ws) for _ in range(n)])
        enqueue_s = time.perf_counter() - t
        executor = EmbeddedExecutor(runtime, {NOOP: NoopHandler()}, concurrency=workers, name="bench")
        t0, cpu0 = time.perf_counter(), time.process_time()
        executor.start()
        try:
            t1 = wait_until_final(runtime, n, timeout=600)
            cpu = time.process_time() - cpu0
        finally:
            executor.stop(drain=False, timeout=30)
    seconds = t1 - t0
    return {"seconds": seconds, "cpu_seconds": cpu, "enqueue_seconds": enqueue_s}


def embedded_notified(n: int, interval: float, workers: int) -> Latency:
    """Same process: the enqueuer's ``notify()`` wakes the idle workers."""
    from lorebase.jobs.executor import EmbeddedExecutor

    with fresh_runtime("notified") as runtime:
        ws = workspace_id(runtime)
        handler = StampHandler()
        executor = EmbeddedExecutor(runtime, {NOOP: handler}, concurrency=workers, name="bench")
        executor.start()
        try:
            trickle(runtime, ws, WARM_UP, interval)
            wait_until_final(runtime, WARM_UP, timeout=60)
            enqueued, took = trickle(runtime, ws, n, interval)
            wait_until_final(runtime, WARM_UP + n, timeout=120)
        finally:
            executor.stop(drain=False, timeout=30)
    return latencies(enqueued, handler.started), took


class WorkerProcess:
    """``lorebase worker`` on a data dir, with the stamp handler: this same script, ``--worker-process``.

    Says ``ready`` once its threads run; on EOF on stdin it stops and prints its start times."""

    def __init__(self, data_dir: Path, poll_seconds: float, workers: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker-process",
                str(data_dir),
                "--poll-seconds",
                repr(poll_seconds),
                "--workers",
                str(workers),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise SystemExit(f"the worker process did not start (said {line!r})")

    def finish(self) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # EOF: the worker stops
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        if self.proc.returncode != 0:
            raise SystemExit(f"the worker process exited with {self.proc.returncode}")
        started: dict[str, float] = json.loads(out)
        return started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def worker_process(data_dir: Path, poll_seconds: float, workers: int) -> None:
    """The child of :class:`WorkerProcess`: a Runtime + EmbeddedExecutor, as ``lorebase worker``."""
    from lorebase.jobs.executor import EmbeddedExecutor
    from lorebase.runtime import Runtime

    runtime = Runtime(make_settings(data_dir, poll_seconds))
    handler = StampHandler()
    executor = EmbeddedExecutor(runtime, {NOOP: handler}, concurrency=workers, name="worker")
    executor.start()
    print("ready", flush=True)
    sys.stdin.read()
    executor.stop(drain=True, timeout=30)
    runtime.close()
    print(json.dumps(handler.started), flush=True)


def embedded_polling(n: int, interval: float, workers: int, poll_seconds: float) -> Latency:
    """Another process runs the workers on the same SQLite file: they find jobs by polling."""
    with fresh_runtime("polling", poll_seconds) as runtime:
        ws = workspace_id(runtime)
        child = WorkerProcess(Path(runtime.settings.data_dir), poll_seconds, workers)
        try:
            trickle(runtime, ws, WARM_UP, interval)
            wait_until_final(runtime, WARM_UP, timeout=60)
            enqueued, took = trickle(runtime, ws, n, interval)
            wait_until_final(runtime, WARM_UP + n, timeout=120)
            started = child.finish()
        finally:
            child.kill()
    return latencies(enqueued, started), took


def embedded(args: argparse.Namespace) -> dict[str, Any]:
    """The embedded executor's figures (worker threads claiming from the SQLite job table)."""
    tp = embedded_throughput(args.jobs, args.workers)
    log(
        f"throughput: {args.jobs} no-op jobs in {tp['seconds']:.2f}s = {args.jobs / tp['seconds']:.0f} jobs/s, "
        f"CPU {tp['cpu_seconds']:.2f}s ({1000 * tp['cpu_seconds'] / args.jobs:.2f} ms/job); "
        f"bulk enqueue {1000 * tp['enqueue_seconds']:.0f} ms"
    )
    lat, took = embedded_notified(args.latency_jobs, args.interval, args.workers)
    notified, notified_enqueue = summary(lat), summary(took)
    log(f"latency, notified (same process): {notified}; enqueue transaction {notified_enqueue}")
    lat, took = embedded_polling(args.latency_jobs, args.interval, args.workers, args.poll_seconds)
    polling, polling_enqueue = summary(lat), summary(took)
    log(
        f"latency, polling (another process, poll {args.poll_seconds:g}s): {polling}; "
        f"enqueue transaction {polling_enqueue}"
    )
    return {
        **throughput_figures(args.jobs, tp["seconds"], tp["cpu_seconds"], tp["enqueue_seconds"]),
        "latency_ms": {
            "notified": notified,
            "polling": {**polling, "poll_seconds": args.poll_seconds},
        },
        "polling_over_notified_p50": round(polling["p50"] / max(notified["p50"], 1e-3), 1),
        # the enqueuer's own transaction (begin → commit): with the workers in another process
        # it meets their claims at SQLite's file lock instead of this process's writer lock
        "enqueue_ms": {
            "notified": {k: notified_enqueue[k] for k in ("p50", "p99", "max")},
            "polling": {k: polling_enqueue[k] for k in ("p50", "p99", "max")},
        },
    }


# -- bare Celery on Redis (the reference) ----------------------------------------------------------
CELERY_TASK = "bench.noop"


def celery_app(redis_url: str) -> Any:
    """A plain Celery app on Redis (Celery's defaults: early acks, prefetch multiplier 4, no
    result backend) with one task, ``bench.noop``: ``INCR`` of the counter its message names, so
    that this process sees when all N have run."""
    import redis
    from celery import Celery

    app = Celery("bench", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    clients: dict[int, Any] = {}  # one per (forked) pool process

    def noop(counter: str) -> None:
        client = clients.get(os.getpid())
        if client is None:
            client = clients[os.getpid()] = redis.Redis.from_url(redis_url)
        client.incr(counter)

    app.task(name=CELERY_TASK, ignore_result=True)(noop)
    return app


def celery_worker_process(redis_url: str, prefix: str, workers: int) -> None:
    """The child: ``celery worker`` (prefork, ``workers`` processes) consuming ``<prefix>.warm``;
    the parent adds ``<prefix>.jobs`` with a remote-control ``add_consumer`` once it has queued them."""
    celery_app(redis_url).worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={workers}",
            f"--queues={prefix}.warm",
            f"--hostname={prefix}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ]
    )


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, from ``/proc`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, parents = 0.0, {pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(stat.parent.name) == pid or int(fields[1]) in parents:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_for_count(client: Any, key: str, n: int, timeout: float, every: float = 0.01) -> float:
    """Poll a Redis counter until it reaches ``n``; the time that poll saw it."""
    deadline = time.monotonic() + timeout
    while True:
        if int(client.get(key) or 0) >= n:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise SystemExit(f"celery ran {int(client.get(key) or 0)} of {n} tasks within {timeout:.0f}s")
        time.sleep(every)


def celery(args: argparse.Namespace) -> dict[str, Any]:
    """Bare Celery on Redis with the same no-op work: the reference the embedded executor is held to.

    A prefork worker with ``--workers`` processes starts on a warm-up queue (WARM_UP tasks run
    through it first); then N messages are published on a queue it does not consume yet, and the
    clock starts when the parent tells the worker to consume it (``add_consumer``), as the
    embedded executor's starts when its threads start on N pending jobs. It stops at the poll
    (every 10 ms) that sees the counter at N. CPU: the worker and its pool processes (Redis's own
    is not counted; SQLite's is, in the embedded executor's figure)."""
    import redis

    prefix = f"lorebase-bench-queue-{os.getpid()}"
    counter = f"{prefix}.done"
    app = celery_app(args.redis_url)
    client = redis.Redis.from_url(args.redis_url)
    worker = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--celery-worker",
            prefix,
            "--redis-url",
            args.redis_url,
            "--workers",
            str(args.workers),
        ],
        stdout=sys.stderr,  # stdout carries this script's JSON line only
    )
    try:
        for _ in range(WARM_UP):
            app.send_task(CELERY_TASK, args=[f"{counter}.warm"], queue=f"{prefix}.warm")
        wait_for_count(client, f"{counter}.warm", WARM_UP, timeout=120)
        t = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(args.jobs):
                app.send_task(CELERY_TASK, args=[counter], queue=f"{prefix}.jobs", producer=producer)
        enqueue_s = time.perf_counter() - t
        t0, cpu0 = time.perf_counter(), process_tree_cpu(worker.pid)
        app.control.add_consumer(f"{prefix}.jobs", destination=[f"{prefix}@{socket.gethostname()}"])
        t1 = wait_for_count(client, counter, args.jobs, timeout=600)
        cpu = process_tree_cpu(worker.pid) - cpu0
    finally:
        worker.terminate()  # warm shutdown
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        keys = [
            k for pattern in (f"{prefix}*", f"_kombu.binding.{prefix}*") for k in client.scan_iter(pattern)
        ]
        if keys:
            client.delete(*keys)
    seconds = t1 - t0
    log(
        f"celery: {args.jobs} no-op tasks in {seconds:.2f}s = {args.jobs / seconds:.0f} jobs/s, "
        f"worker CPU {cpu:.2f}s ({1000 * cpu / args.jobs:.2f} ms/job); publishing {1000 * enqueue_s:.0f} ms"
    )
    return throughput_figures(args.jobs, seconds, cpu, enqueue_s)


def throughput_figures(n: int, seconds: float, cpu_seconds: float, enqueue_seconds: float) -> dict[str, Any]:
    """The throughput keys every executor prints."""
    return {
        "throughput_jobs_per_s": round(n / seconds, 1),
        "cpu_ms_per_job": round(1000 * cpu_seconds / n, 3),
        "throughput_seconds": round(seconds, 3),
        "bulk_enqueue_ms": round(1000 * enqueue_seconds, 1),
    }


#: one function per executor, each returning the throughput keys (``throughput_figures``)
EXECUTORS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "embedded": embedded,
    "celery": celery,
}


def executors(value: str) -> list[str]:
    """``--executor``: one name, several joined by commas, or ``all``."""
    names = list(EXECUTORS) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in EXECUTORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown executor {unknown}: choose from {sorted(EXECUTORS)} or all"
        )
    return names


def main() -> None:
    from lorebase.settings import JobSettings

    default_poll = JobSettings().poll_seconds
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--executor",
        type=executors,
        default=["embedded"],
        help=f"{', '.join(EXECUTORS)}, several joined by commas, or all (default embedded)",
    )
    ap.add_argument(
        "--jobs", type=int, default=None, help="no-op jobs for throughput (default 2000; --smoke: 200)"
    )
    ap.add_argument(
        "--latency-jobs", type=int, default=None, help="jobs trickled for latency (default 300; --smoke: 50)"
    )
    ap.add_argument(
        "--interval", type=float, default=0.02, help="seconds between trickled jobs (default 0.02)"
    )
    ap.add_argument("--workers", type=int, default=2, help="worker threads or processes (default 2)")
    ap.add_argument(
        "--poll-seconds",
        type=float,
        default=default_poll,
        help=f"jobs.poll_seconds of the workers (default {default_poll:g}, the setting's default)",
    )
    ap.add_argument(
        "--redis-url",
        default=os.environ.get("LOREBASE_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Celery's broker (default $LOREBASE_REDIS_URL, else redis://127.0.0.1:6379/0)",
    )
    ap.add_argument("--smoke", action="store_true", help="a quick run (200 + 50 jobs)")
    ap.add_argument("--worker-process", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--celery-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_process is not None:
        worker_process(args.worker_process, args.poll_seconds, args.workers)
        return
    if args.celery_worker is not None:
        celery_worker_process(args.redis_url, args.celery_worker, args.workers)
        return
    clock = time.get_clock_info("perf_counter").implementation
    if clock != "clock_gettime(CLOCK_MONOTONIC)":
        raise SystemExit(f"perf_counter is {clock}: start times from another process are not comparable")
    args.jobs = args.jobs or (200 if args.smoke else 2000)
    args.latency_jobs = args.latency_jobs or (50 if args.smoke else 300)

    log(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    figures = {name: EXECUTORS[name](args) for name in args.executor}
    out: dict[str, Any] = {
        "benchmark": "queue",
        "executor": ",".join(args.executor),
        "workers": args.workers,
        "noop_jobs": args.jobs,
        "latency_jobs": args.latency_jobs,
        "latency_interval_ms": round(1000 * args.interval, 1),
        **figures,
    }
    if "embedded" in figures and "celery" in figures:
        out["embedded_over_celery_throughput"] = round(
            figures["embedded"]["throughput_jobs_per_s"] / figures["celery"]["throughput_jobs_per_s"], 2
        )
    out |= {"load_average": [round(x, 2) for x in os.getloadavg()], "smoke": args.smoke}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
