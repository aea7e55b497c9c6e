"""Fixtures of the fault suite: one clean reference run per module, a data dir per case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import make_settings
from lorebase.runtime import Runtime
from support.faults import clean_run, records

#: the standard corpus: 48 abstracts, one chunk each; batches of 8 make 6 embed batches
N_RECORDS = 48
BATCH = 8


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, str]]:
    return records(N_RECORDS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict[str, str]]) -> dict[str, Any]:
    """What a clean run of ``corpus`` leaves in the database (audited)."""
    rt = Runtime(make_settings(tmp_path_factory.mktemp("clean"), embed_batch_size=BATCH))
    try:
        expected = clean_run(rt, corpus)
    finally:
        rt.close()
    assert expected["statuses"] == {"indexed": N_RECORDS}
    assert len(expected["chunks"]) == N_RECORDS
    return expected


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def rt(data_dir: Path) -> Iterator[Runtime]:
    """The test's view of the shared data dir (no workers of its own)."""
    runtime = Runtime(make_settings(data_dir, embed_batch_size=BATCH))
    yield runtime
    runtime.close()
