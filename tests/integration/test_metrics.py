"""``/metrics`` of a live app after a real ingestion, parsed as Prometheus would."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from support.cluster import free_port
from support.testdb import database_url_for
from support.testexec import ON_BROKER

RECORDS = [
    {"external_id": f"r{i}", "title": f"Record {i}", "text": f"Tiny record number {i} about {topic}."}
    for i, topic in enumerate(("tides", "volcanoes", "lichens"))
]


def scrape(client: TestClient) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """family name -> {(sample name, sorted labels): value}."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(r.text):
        samples = out.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, lbls), v in samples.items() if n == name and set(labels.items()) <= set(dict(lbls).items())
    )


def test_metrics_after_an_ingestion(tmp_path: Any) -> None:
    settings = make_settings(tmp_path / "data")
    with running_app(settings) as client:
        headers = key_headers(client)
        before = scrape(client)  # served before any work, no auth needed
        assert total(before["lorebase_database_up"], "lorebase_database_up") == 1
        created = finalize_draft(client, headers, records=RECORDS, name="metrics kb")
        state = wait_pipeline(client, headers, created["pipeline_id"])
        assert state["status"] == "completed"
        chunks = state["counts"]["chunks_indexed"]
        assert chunks >= len(RECORDS)

        m = scrape(client)
        jobs = m["lorebase_jobs"]
        assert total(jobs, "lorebase_jobs", status="succeeded", type="process_document") >= 1
        assert total(jobs, "lorebase_jobs", status="succeeded", type="embed_chunks") >= 1
        assert (
            total(jobs, "lorebase_jobs", status="failed") + total(jobs, "lorebase_jobs", status="dead") == 0
        )
        assert total(m["lorebase_queue_depth"], "lorebase_queue_depth") == 0
        assert total(m["lorebase_pipelines"], "lorebase_pipelines", status="completed") == 1
        duration = m["lorebase_pipeline_duration_seconds"]
        assert total(duration, "lorebase_pipeline_duration_seconds_count", status="completed") == 1
        assert total(duration, "lorebase_pipeline_duration_seconds_sum", status="completed") > 0
        assert total(m["lorebase_chunks_embedded"], "lorebase_chunks_embedded_total") == chunks
        assert total(m["lorebase_chunks_indexed"], "lorebase_chunks_indexed_total") == chunks
        assert total(m["lorebase_job_leases_live"], "lorebase_job_leases_live") >= 0
        assert total(m["lorebase_workers_live"], "lorebase_workers_live") >= 0
        assert "lorebase_heartbeat_age_seconds" in m
        if not ON_BROKER:  # the worker's instruments are in the worker process, not the API's
            # process-wide instruments: earlier tests in this process count too, so compare deltas
            def grew(family: str, sample: str, **labels: str) -> float:
                return total(m.get(family, {}), sample, **labels) - total(
                    before.get(family, {}), sample, **labels
                )

            assert grew("lorebase_embedding_batch_seconds", "lorebase_embedding_batch_seconds_count") > 0
            assert grew("lorebase_embedder_texts", "lorebase_embedder_texts_total", slot="ingest") == chunks
            succeeded = total(jobs, "lorebase_jobs", status="succeeded", type="process_document")
            assert (
                grew(
                    "lorebase_job_duration_seconds",
                    "lorebase_job_duration_seconds_count",
                    type="process_document",
                    outcome="succeeded",
                )
                == succeeded
            )
        assert "process_cpu_seconds" in m  # the standard process collector, registered per app


def test_live_workers_and_heartbeats_come_from_running_leases(tmp_path: Any) -> None:
    """A job held by a worker shows as a live lease of one worker with a recent heartbeat."""
    settings = make_settings(tmp_path / "data")
    with running_app(settings, workers=0) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with runtime.db.session() as s:
            runtime.queue.enqueue(s, type="notify_email", workspace_id="w", payload={})
            runtime.queue.enqueue(s, type="notify_email", workspace_id="w", payload={})
        assert total(scrape(client)["lorebase_queue_depth"], "lorebase_queue_depth", type="notify_email") == 2
        runtime.queue.claim("host-a:123:worker-0", ("notify_email",))
        runtime.queue.claim("host-a:123:worker-1", ("notify_email",))
        m = scrape(client)
        assert total(m["lorebase_job_leases_live"], "lorebase_job_leases_live") == 2
        assert total(m["lorebase_workers_live"], "lorebase_workers_live") == 1  # two threads, one process
        age = total(m["lorebase_heartbeat_age_seconds"], "lorebase_heartbeat_age_seconds")
        assert not math.isnan(age) and 0 <= age < 30
        assert total(m["lorebase_jobs"], "lorebase_jobs", status="running", type="notify_email") == 2
        assert total(m["lorebase_queue_depth"], "lorebase_queue_depth") == 0


def test_two_apps_in_one_process_each_serve_their_own_database(tmp_path: Any) -> None:
    with (
        running_app(make_settings(tmp_path / "a"), workers=0) as a,
        running_app(make_settings(tmp_path / "b"), workers=0) as b,
    ):
        runtime = a.app.state.runtime  # type: ignore[attr-defined]
        with runtime.db.session() as s:
            runtime.queue.enqueue(s, type="notify_email", workspace_id="w", payload={})
        assert total(scrape(a)["lorebase_queue_depth"], "lorebase_queue_depth") == 1
        assert total(scrape(b)["lorebase_queue_depth"], "lorebase_queue_depth") == 0


@pytest.mark.embedded_only("--metrics-port serves an embedded worker's own instruments")
def test_a_worker_process_serves_its_own_instruments(tmp_path: Any) -> None:
    """In the scaled mode the worker's job and embedding figures live in the worker process:
    ``lorebase worker --metrics-port`` serves them; the API's /metrics has the database's."""
    settings = make_settings(tmp_path / "data")
    port = free_port()
    url = database_url_for(settings.data_dir)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lorebase.cli.main",
            "worker",
            "--concurrency",
            "1",
            "--metrics-port",
            str(port),
        ],
        env={
            **os.environ,
            "LOREBASE_DATA_DIR": str(settings.data_dir),
            "LOREBASE_JOBS__POLL_SECONDS": "0.1",
            **({"LOREBASE_DATABASE_URL": url} if url else {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with running_app(settings, workers=0) as client:
            headers = key_headers(client)
            before = scrape(client).get("lorebase_embedding_batch_seconds", {})
            here_before = total(before, "lorebase_embedding_batch_seconds_count")
            created = finalize_draft(client, headers, records=RECORDS, name="scaled")
            assert wait_pipeline(client, headers, created["pipeline_id"])["status"] == "completed"
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            worker_side = {f.name: f for f in text_string_to_metric_families(text)}
            batches = worker_side["lorebase_embedding_batch_seconds"].samples
            assert sum(s.value for s in batches if s.name.endswith("_count")) > 0
            jobs = worker_side["lorebase_job_duration_seconds"].samples
            assert sum(s.value for s in jobs if s.name.endswith("_count")) > 0
            api_side = scrape(client)
            assert total(api_side["lorebase_jobs"], "lorebase_jobs", status="succeeded") > 0
            # this (test) process embedded nothing: its own histogram did not move
            batches_here = api_side.get("lorebase_embedding_batch_seconds", {})
            assert total(batches_here, "lorebase_embedding_batch_seconds_count") == here_before
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
