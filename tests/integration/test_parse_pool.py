"""The parse pool: real spawned processes parse and chunk; a dead one costs a retry, not the worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lorebase.errors import PermanentError, TransientError
from lorebase.pipeline.isolated import ParsePool, Prepared, prepare
from lorebase.pipeline.types import ChunkingConfig

SPEC = "local:all-MiniLM-L6-v2"
CFG = ChunkingConfig(chunk_size=120, chunk_overlap=10)


def page(n: int) -> bytes:
    body = "".join(
        f"<h2 id='s{i}'>Section {i}</h2><p>{'Rivers carry water to the sea. ' * 30}</p>" for i in range(n)
    )
    return f"<html><head><title>Rivers</title></head><body><main>{body}</main></body></html>".encode()


@pytest.fixture
def pool() -> ParsePool:
    created = ParsePool(2)
    yield created
    created.shutdown()


def test_pool_results_equal_in_thread_results(pool: ParsePool) -> None:
    work = [
        (page(3), "text/html", "a.html", CFG, SPEC, 256),
        (page(5), "text/html", "b.html", CFG, SPEC, 256),
    ]
    in_pool = pool.prepare_all(work)
    in_thread = ParsePool(0).prepare_all(work)
    assert all(isinstance(p, Prepared) for p in in_pool)
    assert in_pool == in_thread
    first = in_pool[0]
    assert isinstance(first, Prepared)
    assert first.title == "Rivers"
    assert [d.metadata["anchor"] for d in first.drafts][:1] == ["s0"]
    assert in_pool[0] == prepare(*work[0])


def test_a_bad_document_fails_alone_with_its_message(pool: ParsePool) -> None:
    work = [
        (b"%PDF-1.7 not really a pdf", "application/pdf", "broken.pdf", CFG, SPEC, 256),
        (page(2), "text/html", "good.html", CFG, SPEC, 256),
    ]
    broken, good = pool.prepare_all(work)
    assert isinstance(broken, PermanentError)
    assert "broken.pdf" in broken.message or "PDF" in broken.message
    assert isinstance(good, Prepared) and good.drafts


def test_a_killed_parser_process_is_a_transient_error_and_the_pool_recovers(pool: ParsePool) -> None:
    pool.prepare_all([(page(1), "text/html", None, CFG, SPEC, 256)])  # the processes are up
    children = pool.pids()
    assert children

    def kill_soon() -> None:
        time.sleep(0.3)
        for pid in children:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    big = [(page(400), "text/html", f"big{i}.html", CFG, SPEC, 256) for i in range(4)]
    with pytest.raises(TransientError, match="parser process died"):
        pool.prepare_all(big)
    killer.join()
    for pid in children:  # the dead processes are gone, not zombies left behind
        assert (
            not Path(f"/proc/{pid}").exists() or "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    again = pool.prepare_all([(page(2), "text/html", "after.html", CFG, SPEC, 256)])
    assert isinstance(again[0], Prepared) and again[0].drafts
    assert set(pool.pids()).isdisjoint(children)


def test_parse_processes_run_at_a_lower_cpu_priority_than_the_worker() -> None:
    """Parsing is batch work: the worker's own threads (crawl I/O, heartbeats, API) come first."""
    niced = ParsePool(1, niceness=7)
    plain = ParsePool(1)
    try:
        niced.start(wait=True)
        plain.start(wait=True)
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in niced.pids()] == [min(19, mine + 7)]
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in plain.pids()] == [mine]
        result = niced.prepare_all([(page(2), "text/html", "a.html", CFG, SPEC, 256)])
        assert isinstance(result[0], Prepared) and result[0].drafts
    finally:
        niced.shutdown()
        plain.shutdown()
