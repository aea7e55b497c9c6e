"""One real ``lorebase serve`` (a process of its own, on loopback) and one small KB on it, shared
by every test of this folder: the client, the remote CLI, the retrievers and the README example
all talk to it over HTTP, as a user's program would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import make_settings
from lorebase.client import Client
from lorebase.runtime import Runtime
from lorebase.services.auth import create_key
from support.live import Served, serve_process

#: tiny on purpose: the real model embeds ~20 chunks a second on the CI machine
ANIMALS = [
    {
        "external_id": "bees",
        "title": "Honeybees",
        "text": "Forager honeybees perform a waggle dance to tell their sisters where the flowers are.",
        "metadata": {"topic": "insects"},
    },
    {
        "external_id": "ants",
        "title": "Leafcutter ants",
        "text": "Leafcutter ants carry pieces of leaves to their nest to grow a fungus garden they eat.",
        "metadata": {"topic": "insects"},
    },
    {
        "external_id": "owls",
        "title": "Owls",
        "text": "Owls hunt at night; soft feathers let them fly silently towards mice in the dark.",
        "metadata": {"topic": "birds"},
    },
    {
        "external_id": "whales",
        "title": "Humpback whales",
        "text": "Humpback whales sing long songs that travel for kilometres through the ocean.",
        "metadata": {"topic": "mammals"},
    },
    {
        "external_id": "glaciers",
        "title": "Glaciers",
        "text": "The Aletsch glacier in Switzerland is the largest glacier in the Alps.",
        "metadata": {"topic": "ice"},
    },
]
#: the server's per-file upload limit (the 413 test) and per-key search limit (the 429 test)
UPLOAD_CAP = 3_000_000
SEARCHES_PER_MINUTE = 60


@dataclass
class Remote:
    url: str
    key: str  # admin key of the workspace "default"
    data_dir: Path
    kb_id: str
    kb_name: str
    log: Path

    def client(self, **kw: object) -> Client:
        return Client(self.url, self.key, **kw)  # type: ignore[arg-type]

    def key_in(self, workspace: str, scopes: str = "read,write,admin") -> str:
        """A key of another workspace, made on the server's data dir as `lorebase keys create` does."""
        rt = Runtime(make_settings(self.data_dir))
        try:
            key, _ = create_key(rt.db, workspace=workspace, name="test", scopes=scopes)
        finally:
            rt.close()
        return key


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    root = tmp_path_factory.mktemp("client-serve")
    with serve_process(
        root,
        workers=1,
        LOREBASE_MAX_UPLOAD_BYTES=str(UPLOAD_CAP),
        LOREBASE_LIMITS__SEARCH_PER_MINUTE=str(SEARCHES_PER_MINUTE),
        LOREBASE_LIMITS__REJECT_DELAY_SECONDS="0",
        # the workers as threads of the server: one load of the model serves both the
        # embedding and the queries (a worker process would load its own, ~10 s of CPU)
        LOREBASE_JOBS__SERVE_WORKER_PROCESS="false",
    ) as server:
        yield server, root / "data"


@pytest.fixture(scope="package")
def remote(served: tuple[Served, Path]) -> Remote:
    server, data_dir = served
    url = f"http://127.0.0.1:{server.port}"
    with Client(url, server.key) as lb:
        draft = lb.create_draft("animals", description="a tiny KB for the client tests")
        lb.add_text_source(draft.id, ANIMALS)
        done = lb.finalize(draft.id)
        final = lb.wait(done.pipeline_id)
        assert final.status == "completed", final
    return Remote(url, server.key, data_dir, done.kb_id, "animals", server.log)
