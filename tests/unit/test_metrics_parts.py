"""Pieces of the metrics module that need no app."""

from __future__ import annotations

from prometheus_client import generate_latest

from lorebase.metrics import REGISTRY, worker_of


def test_a_lease_owner_names_its_process() -> None:
    assert worker_of("host-a:123:worker-0") == "host-a:123"
    assert worker_of("host-a:123:worker-crawl_source-0") == "host-a:123"
    assert worker_of("host-a:123:worker-inline") == worker_of("host-a:123:api-1")


def test_process_instruments_stay_out_of_the_global_registry() -> None:
    from prometheus_client import REGISTRY as GLOBAL

    assert b"lorebase_" not in generate_latest(GLOBAL)
    assert b"lorebase_job_duration_seconds" in generate_latest(REGISTRY)
