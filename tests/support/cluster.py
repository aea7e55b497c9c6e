"""The scaled mode on one machine: a real ``lorebase serve`` and real ``lorebase worker`` processes
(Celery or RQ) that share nothing but PostgreSQL, Redis and the database blob store.

Every process gets a data dir of its own, as if each ran on its own host. Each worker runs in
a session of its own, so ``Cluster.kill_worker`` can SIGKILL it with its pool processes, as a
host dying would. ``Cluster`` is used by the multi-process tests and by ``benchmarks/scale.py``.
With ``forked=True`` (the tests) the processes are forked from the session's zygote
(``support.zygote``) instead of started from scratch; the benchmarks start them from scratch.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REDIS_URL = os.environ.get("LOREBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available(url: str = REDIS_URL) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def delete_keys(prefix: str, url: str = REDIS_URL) -> None:
    """Remove every Redis key of a test's queue prefix (queues, RQ registries, drafts)."""
    import redis

    r = redis.Redis.from_url(url)
    for pattern in (f"{prefix}*", f"*{prefix}.*", f"rq:*{prefix}*"):
        keys = list(r.scan_iter(match=pattern, count=1000))
        if keys:
            r.delete(*keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``base_dir`` holds one data dir per process and their logs; ``database_url`` is shared."""

    def __init__(
        self,
        base_dir: Path,
        database_url: str,
        *,
        executor: str = "celery",
        redis_url: str = REDIS_URL,
        env: dict[str, str] | None = None,
        forked: bool = False,
    ) -> None:
        self.base_dir = base_dir
        self.forked = forked
        self.prefix = f"lbt{uuid.uuid4().hex[:10]}"
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LOREBASE_DATABASE_URL": database_url,
            "LOREBASE_REDIS_URL": redis_url,
            "LOREBASE_EXECUTOR": executor,
            "LOREBASE_QUEUE_PREFIX": self.prefix,
            "LOREBASE_BLOB_STORE": "database",
            "LOREBASE_JOBS__LEASE_SECONDS": "4",
            "LOREBASE_JOBS__HEARTBEAT_SECONDS": "1",
            "LOREBASE_JOBS__REAP_SECONDS": "0.5",
            "LOREBASE_JOBS__POLL_SECONDS": "0.2",
            "LOREBASE_JOBS__REDISPATCH_SECONDS": "10",
            **(env or {}),
        }
        self.workers: list[Any] = []  # subprocess.Popen or support.zygote.ForkedProcess
        self.api: Any = None
        self.base_url = ""
        self._logs: list[Any] = []

    def _spawn(self, name: str, args: list[str], **extra_env: str) -> Any:
        data_dir = self.base_dir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "LOREBASE_DATA_DIR": str(data_dir), **extra_env}
        if self.forked:
            from support import zygote

            forks = zygote.get()
            if forks is not None:
                return forks.spawn(args, env, zygote.ForkedProcess, log=self.base_dir / f"{name}.log")
        log = (self.base_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", "lorebase.cli.main", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed together, like a host
        )

    def start_api(self) -> str:
        port = free_port()
        self.api = self._spawn("api", ["serve", "--workers", "0", "--port", str(port)])
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited with {self.api.returncode}:\n{self.log('api')[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not start:\n{self.log('api')[-3000:]}")

    def start_worker(self, *, concurrency: int = 1, queues: str | None = None) -> Any:
        args = ["worker", "--concurrency", str(concurrency)]
        if queues:
            args += ["--queues", queues]
        proc = self._spawn(f"worker{len(self.workers)}", args)
        self.workers.append(proc)
        return proc

    def worker_of_pid(self, pid: int) -> int | None:
        """Which worker (index) a process belongs to: a pool process shares its worker's group."""
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        for i, w in enumerate(self.workers):
            if w.poll() is None and w.pid == group:
                return i
        return None

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker and its pool processes at once (no drain, no goodbye)."""
        proc = self.workers[index]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def log(self, name: str) -> str:
        path = self.base_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM everything (workers drain), then SIGKILL what is left after a grace period."""
        procs = [p for p in [*self.workers, self.api] if p is not None and p.poll() is None]
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for log in self._logs:
            log.close()
        delete_keys(self.prefix, self.env["LOREBASE_REDIS_URL"])
