"""The task registry: every job type declared once, loadable, and routed where it says."""

from __future__ import annotations

import pytest

from lorebase.jobs.registry import KINDS, Registry, TaskSpec
from lorebase.settings import Settings
from lorebase.tasks import REGISTRY, crawl_source, embed_chunks, process_document


def test_every_task_loads_a_handler_with_run_and_on_failure() -> None:
    assert REGISTRY.names()[:7] == (
        "process_document",
        "embed_chunks",
        "crawl_source",
        "notify_webhook",
        "notify_email",
        "reindex_version",
        "evaluate",
    )
    assert "purge_drafts" in REGISTRY.names()
    for spec in REGISTRY:
        handler = REGISTRY.handler(spec.name)
        assert callable(handler.run) and callable(handler.on_failure), spec.name
        assert REGISTRY.handler(spec.name) is handler  # loaded once
        assert spec.kind in KINDS
        if spec.every is not None:  # periodic: a positive period from the default settings
            assert spec.every(Settings(_env_file=None)) > 0, spec.name  # type: ignore[call-arg]


def test_what_the_declarations_say() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [(s.name, s.kind) for s in REGISTRY if s.resumable] == [
        ("embed_chunks", "embed"),
        ("crawl_source", "crawl"),
        ("reindex_version", "process"),
    ]
    assert REGISTRY.kind_of("notify_email") == "process"
    assert REGISTRY.kind_of("no_such_task") == "process"
    assert REGISTRY.of_kinds(["crawl", "process"])[:6] == (
        "process_document",
        "crawl_source",
        "notify_webhook",
        "notify_email",
        "reindex_version",
        "evaluate",
    )
    assert "embed_chunks" not in REGISTRY.of_kinds(["crawl", "process"])
    assert crawl_source.PRIORITY < process_document.PRIORITY < embed_chunks.PRIORITY
    assert REGISTRY["notify_webhook"].retry.max_attempts(settings) == settings.notify.max_attempts
    assert REGISTRY["embed_chunks"].retry.max_attempts(settings) == settings.jobs.max_attempts
    payload = {"pipeline_id": "p1", "partition": 1, "partitions": 3}
    assert REGISTRY["embed_chunks"].concurrency_key(payload) == "embed:p1:1/3"
    assert REGISTRY["embed_chunks"].concurrency_key({"pipeline_id": "p1"}) == "embed:p1"
    assert REGISTRY["crawl_source"].concurrency_key({"source_id": "s"}) == "crawl:s"
    assert REGISTRY["process_document"].concurrency_key({"document_id": "d"}) is None
    assert REGISTRY["evaluate"].concurrency_key({"evaluation_id": "e"}) == "evaluate:e"


def test_queue_kinds_from_the_command_line() -> None:
    assert REGISTRY.parse_kinds(None) == ("crawl", "process", "embed")
    assert REGISTRY.parse_kinds(" embed, crawl ") == ("embed", "crawl")
    with pytest.raises(ValueError, match="parse"):
        REGISTRY.parse_kinds("crawl,parse")


def test_a_declaration_is_checked_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="queue kind"):
        TaskSpec("t", "m:C", "gpu", 0)
    with pytest.raises(ValueError, match="module:Class"):
        TaskSpec("t", "m.C", "process", 0)
    spec = TaskSpec("t", "m:C", "process", 0)
    with pytest.raises(ValueError, match="declared twice"):
        Registry.of([spec, spec])
    with pytest.raises(KeyError, match="unknown job type"):
        REGISTRY["nope"]
