"""Which blob store the suite's fixtures use: ``LOREBASE_TEST_BLOB_STORE``.

Unset (the default): whatever the settings choose (``local``, or ``database`` on PostgreSQL).

``s3``: every app, runtime and worker the fixtures build keeps its blobs in the session's moto
server (``support.moto_s3``, started on first use and stopped at the end of the session), under a
key prefix of its data dir's own, so tests never see each other's blobs.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

CHOICES = ("", "s3")
TEST_BLOB_STORE = os.environ.get("LOREBASE_TEST_BLOB_STORE", "").strip().lower()
ON_S3 = TEST_BLOB_STORE == "s3"

_prefix_by_data_dir: dict[Path, str] = {}


def _prefix(data_dir: Path) -> str:
    key = Path(data_dir).resolve()
    if key not in _prefix_by_data_dir:
        _prefix_by_data_dir[key] = f"t{uuid.uuid4().hex[:12]}/"
    return _prefix_by_data_dir[key]


def settings_for(data_dir: Path) -> dict[str, Any]:
    """Settings overrides of the test blob store for the app on ``data_dir`` (none by default)."""
    if not ON_S3:
        return {}
    from lorebase.settings import S3Settings
    from support.moto_s3 import s3_settings, shared_server

    url, bucket = shared_server()
    return {"blob_store": "s3", "s3": S3Settings(**s3_settings(url, bucket, _prefix(data_dir)))}


def worker_env(data_dir: Path) -> dict[str, str]:
    """The same for a worker or server process, as ``LOREBASE_*`` variables."""
    if not ON_S3:
        return {}
    from support.moto_s3 import s3_env, shared_server

    url, bucket = shared_server()
    return s3_env(url, bucket, _prefix(data_dir))


def end_session() -> None:
    """Stop the session's moto server, if a fixture or test started it."""
    _prefix_by_data_dir.clear()
    if "support.moto_s3" in sys.modules:
        sys.modules["support.moto_s3"].stop_shared_server()
