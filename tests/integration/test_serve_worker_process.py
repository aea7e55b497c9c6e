"""``lorebase serve`` runs its embedded workers in a child process (``assembly.WorkerChild``).

A real server in a subprocess: its worker process runs at a lower CPU priority, builds a
knowledge base end to end, is woken by the server as soon as work is enqueued (the poll period is
set far beyond the test's deadlines, so only the wake-up can start the jobs in time), reports its
instruments in the server's ``/metrics``, comes back
after it is killed, and does not outlive the server, whether the server stops cleanly or is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.live import serve_process
from support.waiting import wait_for

CHILD = re.compile(r"1 threads in worker process (\d+)")


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], client: httpx.Client, log: Path) -> None:
        self.proc, self.client, self.log = proc, client, log

    def worker_pid(self, timeout: float = 60.0, *, not_: int | None = None) -> int:
        def pid() -> int | None:
            found = CHILD.search(self.client.get("/readyz").json()["checks"]["workers"])
            return int(found.group(1)) if found and int(found.group(1)) != not_ else None

        return wait_for(pid, timeout, "the worker process")

    def finalize_text(self, name: str) -> str:
        """A one-record KB; returns its pipeline id."""
        c = self.client
        draft = c.post("/api/v1/kb-drafts", json={"name": name}).json()["id"]
        doc = {"external_id": "a", "title": "Tides", "text": "The moon's pull raises the tides twice a day."}
        r = c.post(f"/api/v1/kb-drafts/{draft}/sources", json={"type": "text", "documents": [doc]})
        assert r.status_code < 300, r.text
        r = c.post(f"/api/v1/kb-drafts/{draft}/finalize")
        assert r.status_code == 202, r.text
        return str(r.json()["pipeline_id"])

    def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/pipelines/{pipeline_id}").json())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # idle worker threads look for work every 30-90 s: only a wake-up starts a job sooner
    env = {"LOREBASE_JOBS__POLL_SECONDS": "60", "LOREBASE_JOBS__SERVE_WORKER_PROCESS": "true"}
    with serve_process(tmp_path, workers=1, **env) as served:
        headers = {"Authorization": f"Bearer {served.key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", headers=headers, timeout=30) as client:
            yield Server(served.proc, client, served.log)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers signal 0: it has ended all the same
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_the_worker_process_builds_kbs_is_woken_restarted_and_drained(server: Server) -> None:
    child = server.worker_pid()
    assert child != server.proc.pid
    assert Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(server.proc.pid)
    niceness = os.getpriority(os.PRIO_PROCESS, server.proc.pid) + 10  # it lowers its own as it starts
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, child) == niceness, 30, "the lower CPU priority")

    first = server.finalize_text("first")
    wait_for(
        lambda: server.pipeline(first)["counts"]["chunks_created"] > 0, 10, "the woken worker's first job"
    )
    done = wait_for(
        lambda: (p := server.pipeline(first))["status"] not in ("queued", "running") and p,
        180,
        "the pipeline",
    )
    assert done["status"] == "completed", done
    assert done["counts"]["chunks_indexed"] == 1
    hits = server.client.post(f"/api/v1/kbs/{done['kb_id']}/search", json={"query": "moon tides"}).json()
    assert hits["results"] and "moon" in hits["results"][0]["text"]
    # the worker process's instruments are in the server's /metrics, beside the server's own
    scrape = server.client.get("/metrics").text
    assert re.search(
        r'lorebase_job_duration_seconds_count\{outcome="succeeded",type="process_document"\} 1\.0', scrape
    )
    assert re.search(
        r'lorebase_embedder_texts_total\{model="local:all-MiniLM-L6-v2",slot="ingest"\} 1\.0', scrape
    )
    assert re.search(
        r'lorebase_embedder_texts_total\{model="local:all-MiniLM-L6-v2",slot="query"\} 1\.0', scrape
    )
    assert scrape.count("# TYPE lorebase_embedder_texts_total counter") <= 1

    os.kill(child, signal.SIGKILL)  # a worker process that dies is replaced, and the new one is woken
    wait_for(lambda: _gone(child), 10, "the killed worker process")
    second_child = server.worker_pid(timeout=30, not_=child)
    second = server.finalize_text("second")
    wait_for(
        lambda: server.pipeline(second)["counts"]["chunks_created"] > 0, 20, "the new worker's first job"
    )
    assert "exited with code -9; starting a new one" in server.log.read_text()

    server.proc.terminate()  # a clean stop drains the worker process first
    # uvicorn ends a clean shutdown by re-raising the signal it caught
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM), server.log.read_text()
    assert "worker process stopped: 0 jobs still running" in server.log.read_text()
    assert _gone(second_child)


def test_the_worker_process_ends_with_a_killed_server(server: Server) -> None:
    child = server.worker_pid()
    server.proc.kill()
    server.proc.wait()
    wait_for(lambda: _gone(child), 5, "the orphaned worker process to end")
