"""Case 13: about two minutes of ingestion while two worker processes are SIGKILLed and
restarted at random moments; then the audit, against a clean run of the same records.

The seed is printed (and can be set with ``LOREBASE_CHAOS_SEED``) so a failure can be replayed.
Worker losses are transient failures that count attempts; over two minutes of kills a long
embed loop may lose a dozen attempts while still making progress, so attempts are raised to 50
here: the case is about convergence, dead letters have their own case.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_settings
from lorebase.runtime import Runtime
from support.faults import audit, clean_run, ended, records, start_pipeline, wait_for
from support.worker import start_worker

from .conftest import BATCH

CHAOS_SECONDS = 120
WAVE = 60  # records per pipeline; a new one starts whenever the previous ones are done
ENV = {"LOREBASE_EMBED_BATCH_SIZE": str(BATCH), "LOREBASE_JOBS__MAX_ATTEMPTS": "50"}


@pytest.mark.timeout(900)
def test_random_kills_and_restarts_for_two_minutes(tmp_path: Path, rt: Runtime, data_dir: Path) -> None:
    seed = int(os.environ.get("LOREBASE_CHAOS_SEED") or random.randrange(1 << 30))
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    workers: list[subprocess.Popen[bytes]] = [start_worker(data_dir, **ENV) for _ in range(2)]
    ingested: list[dict[str, str]] = []
    pipelines: list[str] = []
    kills = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < CHAOS_SECONDS:
            if all(ended(rt, pid) for pid in pipelines):
                wave = records(WAVE, skip=1000 + len(ingested))
                ingested += wave
                pipelines.append(start_pipeline(rt, wave, name=f"wave{len(pipelines)}")[1])
            time.sleep(rng.uniform(1.0, 6.0))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            kills += 1
            time.sleep(rng.uniform(0.0, 2.0))
            workers[victim] = start_worker(data_dir, **ENV)
        wait_for(
            lambda: all(ended(rt, pid) for pid in pipelines),
            timeout=300,
            what="every pipeline to end after the chaos",
            every=0.5,
        )
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(60)
    print(f"chaos: {kills} kills, {len(pipelines)} pipelines, {len(ingested)} records")
    assert kills >= 15, f"only {kills} kills in {CHAOS_SECONDS}s"
    got = audit(rt)
    assert got["statuses"] == {"indexed": len(ingested)}, f"seed {seed}"

    clean = Runtime(make_settings(tmp_path / "clean", embed_batch_size=BATCH))
    try:
        expected = clean_run(clean, ingested)
    finally:
        clean.close()
    assert got["chunks"] == expected["chunks"], f"seed {seed}"
