"""A real ``lorebase worker`` process on a data dir, with short leases so a killed one is reaped
quickly (crash-recovery tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.testdb import database_url_for


def start_worker(data_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """``env``: extra ``LOREBASE_*`` variables (``LOREBASE_EMBED_BATCH_SIZE="32"`` ...).

    On a PostgreSQL test run the worker gets the data dir's database as LOREBASE_DATABASE_URL."""
    url = database_url_for(data_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "lorebase.cli.main", "worker", "--concurrency", "2"],
        env={
            **os.environ,
            "LOREBASE_DATA_DIR": str(data_dir),
            "LOREBASE_JOBS__LEASE_SECONDS": "3",
            "LOREBASE_JOBS__HEARTBEAT_SECONDS": "1",
            "LOREBASE_JOBS__REAP_SECONDS": "0.5",
            "LOREBASE_JOBS__POLL_SECONDS": "0.1",
            **({"LOREBASE_DATABASE_URL": url} if url else {}),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
