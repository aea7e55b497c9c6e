"""A real ``lorebase worker`` process on a data dir, with short leases so a killed one is reaped
quickly (crash-recovery tests). With ``LOREBASE_TEST_EXECUTOR=celery`` or ``rq`` it is a Celery
or RQ worker (``support.testexec``), in a process group of its own: ``kill()`` and
``terminate()`` reach its pool processes too.

The process is forked from the session's zygote (``support.zygote``: the imports done once),
or started with ``python -m lorebase.cli.main`` when the zygote is off
(``LOREBASE_TEST_ZYGOTE=0``); either way it runs the real ``lorebase worker`` command and logs
to a file that ``worker.stderr`` reads from the start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from support import zygote
from support.testblobs import worker_env as blob_env
from support.testdb import database_url_for
from support.testexec import ON_BROKER, worker_env


class WorkerProcess(subprocess.Popen[bytes]):
    """A worker. SIGKILL goes to its whole process group (the worker and its pool processes: a
    host dying); other signals to the worker alone, as Docker or Kubernetes send SIGTERM."""

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGKILL:
                    os.killpg(self.pid, sig)
                else:
                    os.kill(self.pid, sig)


class ForkedWorker(zygote.ForkedProcess):
    """A worker forked by the zygote; SIGKILL takes its whole process group, as above."""

    def send_signal(self, sig: int) -> None:
        if sig == signal.SIGKILL and self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            return
        super().send_signal(sig)


def start_worker(data_dir: Path, *, concurrency: int = 2, **env: str) -> WorkerProcess | ForkedWorker:
    """``env``: extra ``LOREBASE_*`` variables (``LOREBASE_EMBED_BATCH_SIZE="32"`` ...).

    On a PostgreSQL test run the worker gets the data dir's database as LOREBASE_DATABASE_URL."""
    url = database_url_for(data_dir)
    args = ["worker", "--concurrency", str(concurrency)]
    full_env = {
        **os.environ,
        "LOREBASE_DATA_DIR": str(data_dir),
        "LOREBASE_JOBS__LEASE_SECONDS": "3",
        "LOREBASE_JOBS__HEARTBEAT_SECONDS": "1",
        "LOREBASE_JOBS__REAP_SECONDS": "0.5",
        "LOREBASE_JOBS__POLL_SECONDS": "0.1",
        "LOREBASE_JOBS__REDISPATCH_SECONDS": "5",
        **({"LOREBASE_DATABASE_URL": url} if url else {}),
        **worker_env(data_dir),
        **blob_env(data_dir),
        # a fault's "kill" takes the whole worker (with its pool processes), as a crash would
        **({"LOREBASE_FAULTS_KILL": "group"} if ON_BROKER else {}),
        **env,
    }
    forks = zygote.get()
    if forks is not None:
        return forks.spawn(args, full_env, ForkedWorker)
    # a worker logs every job: into a file, which a pipe's buffer would not hold
    log: Any = tempfile.NamedTemporaryFile(prefix="lorebase-worker-", suffix=".log")  # noqa: SIM115
    proc = WorkerProcess(
        [sys.executable, "-m", "lorebase.cli.main", *args],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    proc.stderr = open(log.name, "rb")  # type: ignore[assignment]  # noqa: SIM115  # from the start, as a pipe
    proc.log_file = log  # type: ignore[attr-defined]  # deleted when the process object goes
    return proc


def owned_by(lease_owner: str, worker: subprocess.Popen[bytes]) -> bool:
    """Whether a lease owner (``host:pid:name``) is ``worker`` or one of its pool processes."""
    try:
        pid = int(lease_owner.split(":")[1])
        return pid == worker.pid or os.getpgid(pid) == worker.pid
    except (IndexError, ValueError, ProcessLookupError):
        return False


def stop_worker(worker: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (drain), then SIGKILL after ``timeout``."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


__all__ = ["ON_BROKER", "WorkerProcess", "owned_by", "start_worker", "stop_worker"]
