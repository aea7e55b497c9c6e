"""Which executor runs the suites' background jobs: ``LOREBASE_TEST_EXECUTOR``.

``embedded`` (the default): worker threads in the app, ``lorebase worker`` processes claiming
from the database, as in the embedded mode.

``celery`` or ``rq``: the scaled mode. Settings made by ``conftest.make_settings`` name that
executor, the test Redis and a queue prefix of the data dir's own; an app started with workers
(``conftest.running_app``) gets a real ``lorebase worker`` process (Celery prefork or RQ) on
the same database instead of threads, and ``support.worker.start_worker`` starts such workers.
Each worker runs in a process group of its own, so killing it kills its pool processes too, as
a host dying would.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from support.cluster import REDIS_URL, delete_keys

CHOICES = ("embedded", "celery", "rq")
TEST_EXECUTOR = os.environ.get("LOREBASE_TEST_EXECUTOR", "").strip().lower() or "embedded"
ON_BROKER = TEST_EXECUTOR in ("celery", "rq")

_prefix_by_data_dir: dict[Path, str] = {}


def prefix_for(data_dir: Path) -> str:
    key = Path(data_dir).resolve()
    if key not in _prefix_by_data_dir:
        _prefix_by_data_dir[key] = f"lbt{uuid.uuid4().hex[:10]}"
    return _prefix_by_data_dir[key]


def settings_for(data_dir: Path) -> dict[str, str]:
    """Settings overrides of the test executor for the app on ``data_dir`` (none when embedded)."""
    if not ON_BROKER:
        return {}
    return {"executor": TEST_EXECUTOR, "redis_url": REDIS_URL, "queue_prefix": prefix_for(data_dir)}


def worker_env(data_dir: Path) -> dict[str, str]:
    return {f"LOREBASE_{k.upper()}": v for k, v in settings_for(data_dir).items()}


def forget(data_dir: Path) -> None:
    """Drop the data dir's Redis keys (queues, drafts) once its test is over."""
    prefix = _prefix_by_data_dir.pop(Path(data_dir).resolve(), None)
    if prefix:
        delete_keys(prefix)
