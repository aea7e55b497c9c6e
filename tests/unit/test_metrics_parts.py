"""Pieces of the metrics module that need no app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lorebase.metrics import REGISTRY, MergedInstruments, worker_of


def test_a_lease_owner_names_its_process() -> None:
    assert worker_of("host-a:123:worker-0") == "host-a:123"
    assert worker_of("host-a:123:worker-crawl_source-0") == "host-a:123"
    assert worker_of("host-a:123:worker-inline") == worker_of("host-a:123:api-1")


def test_process_instruments_stay_out_of_the_global_registry() -> None:
    from prometheus_client import REGISTRY as GLOBAL

    assert b"lorebase_" not in generate_latest(GLOBAL)
    assert b"lorebase_job_duration_seconds" in generate_latest(REGISTRY)


def _instruments(texts: int, seconds: list[float], *, extra: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("t_texts", "texts", ["slot"], registry=registry).labels("ingest").inc(texts)
    latency = Histogram("t_batch_seconds", "batches", ["slot"], buckets=(0.1, 1.0), registry=registry)
    for value in seconds:
        latency.labels("ingest").observe(value)
    if extra:
        Counter("t_only_theirs", "theirs", registry=registry)
    return registry


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_another_process_s_instruments_add_to_ours_in_one_valid_exposition() -> None:
    ours = _instruments(3, [0.05, 0.5])
    theirs = generate_latest(_instruments(4, [], extra=True)).decode()
    merged = CollectorRegistry(auto_describe=False)
    merged.register(MergedInstruments(ours, lambda: theirs))
    text = generate_latest(merged).decode()
    got = _samples(text)
    ingest = (("slot", "ingest"),)
    assert got[("t_texts_total", ingest)] == 7.0  # the same series in both processes: summed
    assert got[("t_batch_seconds_count", ingest)] == 2.0
    assert got[("t_batch_seconds_bucket", (("le", "1.0"), ("slot", "ingest")))] == 2.0
    assert got[("t_only_theirs_total", ())] == 0.0  # a family only they have is kept
    assert text.count("# TYPE t_texts_total counter") == 1  # one family per name: a valid scrape
    # a process that does not answer (restarting) or answers garbage adds nothing
    for broken in ("", "t_texts_total{slot=ingest 3\n"):
        alone = CollectorRegistry(auto_describe=False)
        alone.register(MergedInstruments(ours, lambda broken=broken: broken))
        assert _samples(generate_latest(alone).decode())[("t_texts_total", ingest)] == 3.0
