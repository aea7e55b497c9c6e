"""The process-wide container: settings, database, queue, blobs, embedders and stores.

Built once (in the app's lifespan, the worker command, or the CLI) and handed to services and
job handlers, so that the same code runs behind HTTP, the CLI and the workers.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

from sqlalchemy.engine import make_url

from lorebase.adapters.blobs.database import DatabaseBlobStore
from lorebase.adapters.blobs.local import LocalBlobStore
from lorebase.adapters.blobs.protocol import BlobStore
from lorebase.adapters.drafts import DraftRepository, build_draft_repository
from lorebase.adapters.embedders import build_embedder, embedder_info, embedder_problem, is_openai
from lorebase.adapters.embedders.protocol import Embedder
from lorebase.adapters.events import EventBus, build_event_bus, connect_redis
from lorebase.adapters.stores.protocol import Store
from lorebase.adapters.stores.sqlite import SqliteStore
from lorebase.db.engine import Database
from lorebase.db.migrate import upgrade
from lorebase.db.querylog import QueryLogWriter
from lorebase.errors import InvalidInput, PermanentError
from lorebase.jobs.queue import JobQueue
from lorebase.settings import Settings

#: stores this build can run, by name, with the database each lives in (the store writes in the
#: caller's transaction, so chunk rows and their index entries commit together); None: a store
#: outside the database (Qdrant, Chroma), beside either database, written at-least-once
STORE_DATABASES: dict[str, str | None] = {
    "sqlite": "sqlite",
    "pgvector": "postgresql",
    "qdrant": None,
    "chroma": None,
}
AVAILABLE_STORES = tuple(STORE_DATABASES)
#: the package each external store needs, and the extra that installs it
_STORE_PACKAGES = {"qdrant": ("qdrant_client", "qdrant"), "chroma": ("chromadb", "chroma")}


def check_supported(settings: Settings) -> None:
    """Refuse settings that belong to pieces not in this build, rather than silently ignore them."""
    problems = []
    if settings.executor == "celery" and not settings.resolved_broker_url:
        problems.append(
            "LOREBASE_EXECUTOR=celery needs a broker: set LOREBASE_REDIS_URL or LOREBASE_BROKER_URL"
        )
    if settings.executor == "rq" and not settings.redis_url:
        problems.append("LOREBASE_EXECUTOR=rq needs LOREBASE_REDIS_URL")
    backend = make_url(settings.resolved_database_url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        problems.append(f"LOREBASE_DATABASE_URL: {backend} is not supported; use SQLite or PostgreSQL")
    if settings.vector_store not in AVAILABLE_STORES:
        problems.append(
            f"LOREBASE_VECTOR_STORE={settings.vector_store}: available: {', '.join(AVAILABLE_STORES)}"
        )
    elif settings.vector_store in _STORE_PACKAGES:
        package, extra = _STORE_PACKAGES[settings.vector_store]
        if importlib.util.find_spec(package) is None:
            problems.append(
                f"LOREBASE_VECTOR_STORE={settings.vector_store} needs {package}: pip install 'lorebase[{extra}]'"
            )
        if settings.vector_store == "qdrant" and settings.executor != "embedded" and not settings.qdrant_url:
            problems.append(
                "LOREBASE_VECTOR_STORE=qdrant with Celery/RQ workers needs LOREBASE_QDRANT_URL: "
                "a local Qdrant directory can be open in one process only"
            )
    elif backend in ("sqlite", "postgresql") and STORE_DATABASES[settings.vector_store] != backend:
        needed = {"sqlite": "sqlite", "postgresql": "pgvector"}[backend]
        problems.append(
            f"LOREBASE_VECTOR_STORE={settings.vector_store} needs a {STORE_DATABASES[settings.vector_store]}"
            f" database, and LOREBASE_DATABASE_URL is {backend}: use LOREBASE_VECTOR_STORE={needed}"
        )
    try:
        embedder_info(settings.embedder)
    except InvalidInput as exc:
        problems.append(f"LOREBASE_EMBEDDER: {exc.message}")
    if (problem := embedder_problem(settings.embedder)) is not None:
        problems.append(f"LOREBASE_EMBEDDER: {problem}")
    if settings.openai_tokenizer is not None and not settings.openai_tokenizer.is_file():
        problems.append(f"LOREBASE_OPENAI_TOKENIZER: no file {settings.openai_tokenizer} (a tokenizer.json)")
    if is_openai(settings.embedder) and not settings.openai_base_url:
        problems.append(
            f"LOREBASE_EMBEDDER={settings.embedder} needs LOREBASE_OPENAI_BASE_URL (the endpoint new KBs embed with)"
        )
    if problems:
        raise InvalidInput("unsupported configuration: " + "; ".join(problems))


class Runtime:
    def __init__(self, settings: Settings, *, migrate: bool = True, serving: bool = False) -> None:
        check_supported(settings)
        self.settings = settings
        #: the API process (``serve``): long-lived, it answers searches, and no search waits for a
        #: one-time build. The sqlite store's in-memory indexes are built in a thread while SQL
        #: answers (``stores/memory_index.py``), and fp32 queries move to ONNX Runtime once its
        #: file is built (``embedders/int8.FastQueries``, setting ``onnx_queries``)
        self.serving = serving
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.resolved_database_url)
        if migrate:
            upgrade(self.db.engine)
        self.queue = JobQueue(self.db, settings.jobs)
        #: search's query log, written in batches off the request path (``db/querylog.py``)
        self.query_log = QueryLogWriter(self.db, delay=settings.query_log_delay_seconds)
        self.blobs: BlobStore = self._new_blob_store()
        #: (spec, base_url, dimensions, slot) -> embedder (the middle two: ``openai:`` models')
        self._embedders: dict[tuple[str, str | None, int | None, str], Embedder] = {}
        self._stores: dict[tuple[str, int], Store] = {}
        self._lock = threading.Lock()
        self._redis = connect_redis(settings)  # one client for drafts and events; None when embedded
        self.events: EventBus = build_event_bus(settings, self._redis)  # live events (pub/sub)
        self.drafts: DraftRepository = build_draft_repository(settings, self.db, self._redis)
        # The store's tables exist before any transaction needs them: creating them lazily from
        # inside another write transaction would wait on SQLite's lock held by that transaction.
        # (an ``openai:`` default's dimension is known once its endpoint answers: its store's
        # tables are made when the first such KB is created, before any write transaction)
        if (dimensions := embedder_info(settings.embedder)[0]) is not None:
            self.store(settings.vector_store, dimensions)

    def _new_blob_store(self) -> BlobStore:
        if self.settings.blob_store == "database":
            return DatabaseBlobStore(self.db)
        if self.settings.blob_store == "s3":
            from lorebase.adapters.blobs.s3 import S3BlobStore  # boto3 loads only when used

            return S3BlobStore(self.settings.s3)
        return LocalBlobStore(self.settings.blob_dir)

    def embedder(
        self, spec: str | None = None, *, slot: str = "ingest", embedding: dict[str, Any] | None = None
    ) -> Embedder:
        """The embedder of ``spec`` (default: the server's), or of a KB config's ``embedding``
        options (an ``openai:`` model's endpoint and recorded dimension are part of them)."""
        spec = (embedding or {}).get("model") or spec or self.settings.embedder
        options: dict[str, Any] = embedding if embedding is not None and is_openai(spec) else {"model": spec}
        key: tuple[str, str | None, int | None, str] = (
            spec,
            options.get("base_url"),
            options.get("dimensions"),
            slot,
        )
        with self._lock:
            if key not in self._embedders:
                self._embedders[key] = build_embedder(
                    spec,
                    data_dir=self.settings.data_dir,
                    slot=slot,
                    threads=self.settings.embed_threads,
                    onnx_fp32=slot == "query" and self.serving and self.settings.onnx_queries,
                    settings=self.settings,
                    embedding=options,
                )
            return self._embedders[key]

    def query_embedder(self, spec: str | None = None, *, embedding: dict[str, Any] | None = None) -> Embedder:
        """A second model instance for queries, so searches never wait behind an ingestion batch."""
        return self.embedder(spec, slot="query", embedding=embedding)

    def embedding_info(self, embedding: dict[str, Any]) -> tuple[int | None, int]:
        """(dimensions, max_tokens) of a KB config's ``embedding``: an ``openai:`` model's
        dimension is the one its config records (None before its endpoint first answered)."""
        dims, max_tokens = embedder_info(
            embedding["model"], openai_max_tokens=self.settings.openai_max_tokens
        )
        return (dims if dims is not None else embedding.get("dimensions")), max_tokens

    def store(self, name: str | None, dimensions: int) -> Store:
        name = name or self.settings.vector_store
        with self._lock:
            key = (name, dimensions)
            if key not in self._stores:
                if (problem := self.store_problem(name)) is not None:
                    raise InvalidInput(f"this knowledge base cannot be served here: {problem}")
                store = self._new_store(name, dimensions)
                with self.db.session() as s:
                    store.ensure_schema(s)
                self._stores[key] = store
            return self._stores[key]

    def store_problem(self, name: str) -> str | None:
        """Why a knowledge base could not use the store ``name`` on this server, or None."""
        if name not in AVAILABLE_STORES:
            return f"unknown vector store {name!r}; available: {', '.join(AVAILABLE_STORES)}"
        needs = STORE_DATABASES[name]
        if needs is not None and needs != self.db.engine.dialect.name:
            return f"the {name!r} store needs a {needs} database; this server runs on {self.db.engine.dialect.name}"
        if name in _STORE_PACKAGES and importlib.util.find_spec(_STORE_PACKAGES[name][0]) is None:
            return f"the {name!r} store is not installed on this server (pip install 'lorebase[{_STORE_PACKAGES[name][1]}]')"
        return None

    def _new_store(self, name: str, dimensions: int) -> Store:
        if name == "pgvector":
            from lorebase.adapters.stores.pgvector import PgvectorStore

            return PgvectorStore(
                dimensions,
                keyword_cache_bytes=self.settings.keyword_cache_mb * 1024 * 1024,
                background=self.serving,
            )
        if name == "qdrant":
            from lorebase.adapters.stores.qdrant import QdrantStore

            url = self.settings.qdrant_url
            return (
                QdrantStore(dimensions, url=url)
                if url
                else QdrantStore(dimensions, path=self.settings.data_dir / "qdrant")
            )
        if name == "chroma":
            from lorebase.adapters.stores.chroma import ChromaStore

            return ChromaStore(dimensions, path=self.settings.data_dir / "chroma")
        return SqliteStore(
            dimensions,
            cache_bytes=self.settings.vector_cache_mb * 1024 * 1024,
            keyword_cache_bytes=self.settings.keyword_cache_mb * 1024 * 1024,
            background=self.serving,
        )

    def kb_store(self, config: dict[str, Any]) -> Store:
        dims, _ = self.embedding_info(config["embedding"])
        if dims is None:  # an openai: KB is created with its dimension recorded (services/drafts)
            raise PermanentError(
                f"the knowledge base's model {config['embedding']['model']} has no recorded dimension"
            )
        return self.store(config["store"]["type"], dims)

    def kb_embedder(self, config: dict[str, Any]) -> Embedder:
        return self.embedder(embedding=config["embedding"])

    def close(self) -> None:
        self.query_log.close()  # what is queued is written: a clean shutdown loses no query
        for store in self._stores.values():
            closer = getattr(store, "close", None)  # external stores hold files or connections
            if closer is not None:
                closer()
        self.db.dispose()
        if self._redis is not None:
            self._redis.close()
