"""One settings object for the whole service, read from ``LOREBASE_*`` variables and ``.env``.

Nested concerns are separate models; their variables join keys with ``__``
(``LOREBASE_JOBS__LEASE_SECONDS=30``). Every field says what it is for; ``docs/configuration.md``
is checked against these descriptions by a test, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class JobSettings(BaseModel):
    """How background jobs are leased, retried and polled."""

    lease_seconds: float = Field(
        30.0, gt=0, description="How long a claimed job is owned before the reaper may take it back."
    )
    heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often a running job renews its lease (must be well under the lease)."
    )
    max_attempts: int = Field(
        5, ge=1, description="Attempts before a job that keeps failing transiently ends `dead`."
    )
    backoff_base_seconds: float = Field(
        2.0, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    backoff_max_seconds: float = Field(300.0, gt=0, description="Upper bound of a retry delay.")
    poll_seconds: float = Field(
        0.5, gt=0, description="How often an idle worker looks for work written by other processes."
    )
    reap_seconds: float = Field(
        5.0, gt=0, description="How often a worker returns expired leases to `pending`."
    )
    prefetch: int = Field(
        8,
        ge=1,
        description="Most jobs an embedded worker thread claims at once: the one it starts and those "
        "its sibling threads or itself run next, leased meanwhile (1: one at a time).",
    )
    prefetch_seconds: float = Field(
        0.05,
        ge=0,
        description="How far ahead a worker thread claims: as many jobs as its recent jobs say it "
        "will start within this time (long jobs are claimed one at a time).",
    )
    max_running_per_pipeline: int = Field(
        0, ge=0, description="Jobs of one pipeline running at once across all workers (0: no limit)."
    )
    max_running_per_workspace: int = Field(
        0,
        ge=0,
        description="Jobs of one workspace running at once across all workers, so one tenant's "
        "bulk ingestion cannot take every worker (0: no limit).",
    )
    crawl_workers: int = Field(
        1,
        ge=0,
        description="Threads of each worker process that run only crawls, beside its general "
        "worker threads: a crawl waits on the network for its whole run, so it never holds a "
        "thread that parses or embeds (0: crawls run on the general threads).",
    )
    parse_processes: int = Field(
        2,
        ge=0,
        description="Processes that parse and chunk documents beside the worker threads, so "
        "parsing does not hold their GIL (0: parse in the worker thread itself).",
    )

    serve_worker_process: bool = Field(
        True,
        description="`lorebase serve` runs its embedded worker threads in a child process of its own, "
        "at `worker_niceness`, instead of beside the API in one interpreter: requests then never wait "
        "for the GIL or the CPU behind embedding (false: threads in the server process).",
    )
    worker_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower the CPU priority of `serve`'s worker process is than the API's "
        "(Unix nice increment): background work takes the CPU the requests leave (0: same priority).",
    )

    parse_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower the parse processes' CPU priority is than the worker's "
        "(Unix nice increment): parsing is batch work, so the worker's threads, a crawl's "
        "network I/O, heartbeats and API requests get the CPU first (0: same priority).",
    )

    embed_partitions: int = Field(
        1,
        ge=1,
        le=64,
        description="Embedding jobs of one pipeline that may run at once, each embedding its own "
        "share of the chunks. One suits a single machine (the model already uses every core); "
        "with workers on several machines, set it to the number of workers that embed.",
    )
    time_limit_seconds: float = Field(
        3600.0,
        gt=0,
        description="Celery/RQ: the soft time limit of one job attempt; the job then checkpoints "
        "or retries (a crawl resumes from its frontier). The hard limit is 60 s later.",
    )
    redispatch_seconds: float = Field(
        120.0,
        gt=0,
        description="Celery/RQ: a pending job whose broker message was sent this long ago and "
        "never started is dispatched again (a lost message); extra messages are harmless.",
    )

    @model_validator(mode="after")
    def _heartbeat_under_lease(self) -> JobSettings:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("jobs.heartbeat_seconds must be at most half of jobs.lease_seconds")
        return self


class ChunkingSettings(BaseModel):
    """Defaults for new knowledge bases (a draft's config overrides them)."""

    strategy: Literal["recursive", "structure"] = Field("recursive", description="Default chunking strategy.")
    chunk_size: int = Field(200, ge=16, description="Default chunk size in the embedding model's tokens.")
    chunk_overlap: int = Field(20, ge=0, description="Default overlap between consecutive chunks, in tokens.")


class CrawlSettings(BaseModel):
    """Web crawling (web sources)."""

    allow_private_networks: bool = Field(
        False,
        description="Allow crawling loopback/private addresses (intranet docs, tests). Off by default (SSRF).",
    )
    allowed_hosts: str = Field(
        "",
        description="Comma-separated host names and CIDRs the crawler may reach even when private "
        "(e.g. `wiki.corp,10.20.0.0/16`).",
    )
    user_agent: str = Field(
        "lorebase/0.1 (+https://github.com/lorebase/lorebase)",
        description="User-Agent of the crawler; robots.txt rules for `lorebase` apply to it.",
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a single page request may take (connect + download)."
    )
    max_page_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest page or linked file the crawler downloads."
    )
    max_attempts: int = Field(
        3, ge=1, description="Fetch attempts per page on transient errors (timeouts, 429, 5xx)."
    )
    firecrawl_url: str | None = Field(
        None, description="Base URL of a Firecrawl API for sources with `crawl.engine: firecrawl`."
    )
    firecrawl_api_key: str | None = Field(None, description="API key sent to the Firecrawl API.")


class NotifySettings(BaseModel):
    """Notifications when a pipeline ends (webhooks and email; see docs/notifications.md)."""

    webhook_secret: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature every webhook carries (`X-Lorebase-Signature`). "
        "Required for webhooks: a knowledge base with a `notifications.webhook_url` fails validation "
        "while it is unset, so no unsigned request is ever sent.",
    )
    allow_private_networks: bool = Field(
        False,
        description="Allow webhooks to loopback/private addresses (an intranet receiver, tests). Off "
        "by default: a webhook URL is typed by a user and must not reach internal services (SSRF).",
    )
    allowed_hosts: str = Field(
        "",
        description="Comma-separated host names and CIDRs webhooks may reach even when private "
        "(e.g. `hooks.corp,10.20.0.0/16`).",
    )
    timeout_seconds: float = Field(
        10.0, gt=0, description="Longest one webhook request or SMTP conversation may take."
    )
    max_attempts: int = Field(
        10,
        ge=1,
        description="Attempts to deliver one webhook or email before it ends `dead` (delays follow "
        "`jobs.backoff_*`: with the defaults, about 10 minutes of retries).",
    )


class SmtpSettings(BaseModel):
    """The mail server that sends pipeline notifications (unset host: email is off)."""

    host: str | None = Field(
        None,
        description="SMTP server host; unset: email notifications are off and a knowledge base "
        "asking for them (`notifications.email_to`) fails validation.",
    )
    port: int = Field(587, ge=1, le=65535, description="SMTP server port.")
    username: str | None = Field(None, description="SMTP login user (unset: no login).")
    password: SecretStr | None = Field(None, description="SMTP login password.")
    starttls: bool = Field(
        True, description="Upgrade the connection with STARTTLS before logging in and sending."
    )
    from_address: str = Field("lorebase@localhost", description="The `From` address of notification emails.")


class LimitSettings(BaseModel):
    """Per-workspace quotas and per-key rate limits (0 turns a limit off)."""

    workspace_max_documents: int = Field(
        100_000, ge=0, description="Documents one workspace may hold across all its KBs (0: no limit)."
    )
    workspace_max_bytes: int = Field(
        20 * 1024**3,
        ge=0,
        description="Bytes of uploaded files and text records one workspace may hold (0: no limit).",
    )
    search_per_minute: int = Field(
        600, ge=0, description="Searches one API key may run per minute (429 beyond; 0: no limit)."
    )
    uploads_per_minute: int = Field(
        120,
        ge=0,
        description="Upload and add-sources requests one API key may make per minute (429 beyond; 0: no limit).",
    )
    finalize_per_minute: int = Field(
        30, ge=0, description="Draft finalizes one API key may make per minute (429 beyond; 0: no limit)."
    )
    search_share_while_ingesting: float = Field(
        0.2,
        gt=0,
        le=1,
        description="While this server's own workers run jobs, searches take turns and keep to "
        "this share of the time (a search that took 10 ms lets the next start 40 ms later at 0.2): "
        "on a small machine ingestion keeps most of the CPU however hard searches come, and "
        "searches wait their turn instead of failing. 1: no pacing.",
    )
    reject_delay_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="A request over its rate limit gets its 429 after this long (at most its "
        "Retry-After): a client that ignores Retry-After and retries at once is slowed to about one "
        "rejection per second per connection instead of taking the server's CPU with them. The wait "
        "holds no thread, and at most 1,000 such answers wait at once per process (0: answer at once).",
    )


class RetentionSettings(BaseModel):
    """How long things that are no longer used are kept."""

    kb_versions: int = Field(
        1,
        ge=0,
        description="Retired config versions of a KB kept for rollback (the newest first); older "
        "ones are deleted with their chunks and vectors when another version goes live.",
    )
    blob_grace_seconds: float = Field(
        86400.0,
        ge=0,
        description="An unreferenced blob (a deleted KB's upload, an expired draft's, a replaced "
        "file's) is deleted by the blob GC this long after it was last stored.",
    )
    jobs_days: float = Field(
        30.0, ge=0, description="Finished jobs older than this many days are deleted (0: keep)."
    )
    events_days: float = Field(
        30.0,
        ge=0,
        description="Pipeline events (the SSE replay log) older than this many days are deleted (0: keep).",
    )
    query_logs_days: float = Field(
        365.0,
        ge=0,
        description="Query logs older than this many days are deleted (0: keep); a workspace may set "
        "its own (`PATCH /api/v1/workspace`).",
    )
    idempotency_days: float = Field(
        1.0,
        ge=0,
        description="Idempotency keys older than this many days are deleted (0: keep until they expire).",
    )
    originals_days: float = Field(
        0.0,
        ge=0,
        description="Default original-file retention: originals of documents indexed longer ago than "
        "this are deleted, chunks and vectors stay (0: keep); a workspace may set its own.",
    )

    def for_workspace(self, overrides: Mapping[str, Any] | None, name: str) -> float:
        """The retention ``name`` (``originals_days``, ``query_logs_days``) of a workspace: its own
        (``Workspace.retention``) when it set one, else this default; 0 means keep."""
        value = (overrides or {}).get(name)
        return (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            else float(getattr(self, name))
        )


class SchedulerSettings(BaseModel):
    """Periodic work (``jobs/scheduler.py``): cleanup, retention and scheduled refreshes, run by
    the workers exactly once per period across all processes."""

    tick_seconds: float = Field(
        30.0, gt=0, description="How often a worker looks for due periodic tasks (tests shorten it)."
    )
    cleanup_seconds: float = Field(
        3600.0,
        gt=0,
        description="Period of the cleanup tasks: blob GC, expired drafts, retention.",
    )
    refresh_seconds: float = Field(
        60.0,
        gt=0,
        description="Period of the scheduled-refresh task: web sources whose `refresh_every` is due "
        "are refreshed.",
    )
    enabled: bool = Field(
        True, description="Whether this process's workers run the scheduler (API-only nodes run none)."
    )


class S3Settings(BaseModel):
    """The S3-compatible bucket of ``blob_store = "s3"`` (AWS S3, MinIO, Ceph, R2, …)."""

    endpoint_url: str | None = Field(
        None,
        description="Endpoint of the S3-compatible service (`http://minio:9000`); unset: AWS S3 of `region`.",
    )
    bucket: str | None = Field(
        None, description="Bucket that holds the blobs; required when `blob_store = s3`."
    )
    region: str = Field("us-east-1", description="Region of the bucket (and of request signing).")
    access_key_id: str | None = Field(
        None, description="Access key id; unset: boto3's own chain (environment, instance role, …)."
    )
    secret_access_key: SecretStr | None = Field(None, description="Secret access key of `access_key_id`.")
    prefix: str = Field(
        "",
        description="Prefix of every object key (`lorebase/`), so one bucket can serve several deployments.",
    )
    connect_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait for a connection to the S3 endpoint."
    )
    read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest wait for the S3 endpoint to answer a request (or send the next bytes).",
    )
    max_attempts: int = Field(
        2,
        ge=1,
        description="Attempts boto3 makes per S3 request; kept small, since a failed blob read or "
        "write fails its job transiently and the job engine retries it with backoff.",
    )
    multipart_threshold_mb: int = Field(
        8, ge=5, description="Files larger than this are uploaded in parts (multipart upload)."
    )
    multipart_chunk_mb: int = Field(8, ge=5, description="Size of one part of a multipart upload.")


class ParseSettings(BaseModel):
    """Limits that keep a hostile or pathological file from hurting a worker."""

    max_seconds: float = Field(
        120.0, gt=0, description="Wall-clock limit for parsing one document; beyond it the document fails."
    )
    max_cpu_seconds: int = Field(
        60, ge=1, description="CPU-time limit (RLIMIT_CPU) of the subprocess that parses one document."
    )
    max_memory_mb: int = Field(
        2048,
        ge=256,
        description="Memory one document may take in its parser subprocess, in MiB (RLIMIT_AS set "
        "to the warmed-up process's size plus this before each document); a file that needs more "
        "fails its document.",
    )
    zip_max_entries: int = Field(
        10_000,
        ge=1,
        description="Entries a zip-based document (DOCX, PPTX, XLSX, EPUB) may hold before it is refused unparsed.",
    )
    zip_max_uncompressed_bytes: int = Field(
        512 * 1024**2,
        ge=1,
        description="Total declared uncompressed size a zip-based document (DOCX, PPTX, XLSX, EPUB) may "
        "have before it is refused.",
    )
    zip_max_ratio: float = Field(
        200.0,
        gt=1,
        description="Highest compression ratio of a zip entry (uncompressed / compressed) before the "
        "file is refused as a zip bomb.",
    )
    max_table_rows: int = Field(
        100_000,
        ge=1,
        description="Rows of a spreadsheet or CSV file (all sheets together) that are indexed; the "
        "rest of the file is dropped and the document's metadata says so (`warnings`).",
    )
    ocr: bool = Field(
        True,
        description="OCR images (PNG, JPEG, TIFF) and PDF pages without a text layer with Tesseract; "
        'off, an image upload fails and a scanned PDF fails with "no text layer; OCR is off".',
    )
    tesseract_cmd: str = Field(
        "tesseract",
        description="The Tesseract binary (name on PATH or path); `apt install tesseract-ocr tesseract-ocr-eng`.",
    )
    ocr_language: str = Field(
        "eng",
        description="Tesseract language(s), e.g. `eng` or `eng+deu` (each needs its tesseract-ocr-* package).",
    )
    ocr_dpi: int = Field(
        300, ge=72, le=600, description="Resolution at which a scanned PDF page is rendered for OCR."
    )
    ocr_max_pages: int = Field(
        100,
        ge=1,
        description="Pages of one image (multi-page TIFF) or scanned PDF that OCR accepts; more is refused.",
    )
    ocr_max_pixels: int = Field(
        40_000_000,
        ge=1_000_000,
        description="Pixels of one image page OCR accepts (also Pillow's `MAX_IMAGE_PIXELS`); a larger "
        "image is refused as a decompression bomb, a PDF page is rendered at a lower DPI to fit.",
    )
    ocr_min_confidence: float = Field(
        60.0,
        ge=0,
        le=100,
        description="Mean OCR word confidence (0-100) below which a page is named in the document's warnings.",
    )


class Settings(BaseSettings):
    """Root settings. Environment variables win over ``.env``; defaults run the embedded mode."""

    model_config = SettingsConfigDict(
        env_prefix="LOREBASE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    data_dir: Path = Field(
        Path("./lorebase-data"), description="Where the embedded database, uploads and caches live."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default is a SQLite file in the data dir. `postgresql+psycopg://…` scales out.",
    )
    redis_url: str | None = Field(
        None, description="Enables Redis drafts, events and the Celery broker (scaled mode)."
    )
    executor: Literal["embedded", "celery", "rq"] = Field(
        "embedded",
        description="Who runs background jobs: `embedded` threads, or `celery` / `rq` workers started "
        "with `lorebase worker` (the job table stays the source of truth; the broker only delivers).",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (`redis://…` or `amqp://…` for RabbitMQ); default: `redis_url`.",
    )
    queue_prefix: str = Field(
        "lorebase",
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="Prefix of broker queue names and Redis keys, so several deployments can share "
        "one Redis or broker.",
    )
    blob_store: Literal["local", "database", "s3"] = Field(
        "local",
        description="Where uploads and fetched pages are kept: files in the data dir (`local`), "
        "the database (`database`, readable by workers on other machines; the default on PostgreSQL) "
        "or an S3-compatible bucket (`s3`, see `s3.*`).",
    )
    s3: S3Settings = Field(
        default_factory=S3Settings, description="The S3-compatible bucket of `blob_store = s3`."
    )
    signed_url_ttl_seconds: int = Field(
        3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Lifetime of a signed link to a document's original "
        "(`GET /api/v1/documents/{id}/original` redirects to one).",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Server secret that signs links to originals on the local and database blob "
        "stores (HMAC-SHA256). Unset: a random key made once per deployment and kept in the "
        "database, shared by every API node.",
    )
    vector_store: Literal["sqlite", "pgvector", "qdrant", "chroma"] = Field(
        "sqlite",
        description="Default vector + keyword store for new knowledge bases (`pgvector` when "
        "the database is PostgreSQL and this is not set).",
    )
    qdrant_url: str | None = Field(
        None,
        description="Qdrant server for `vector_store = qdrant` (`http://host:6333`); unset: a local "
        "Qdrant directory in the data dir, usable by one process at a time.",
    )
    embedder: str = Field(
        "local:all-MiniLM-L6-v2", description="Default embedding model: `local:<name>` or `openai:<model>`."
    )
    openai_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible embeddings endpoint."
    )
    openai_api_key: str | None = Field(
        None,
        description="API key for the OpenAI-compatible endpoint, sent as `Authorization: Bearer` to "
        "`openai_base_url` only (never to a KB's own `config.embedding.base_url`, never stored in a KB).",
    )
    openai_allowed_base_urls: str = Field(
        "",
        description="Comma-separated endpoints a KB may name as its own `config.embedding.base_url` "
        "(besides `openai_base_url`). Empty: none, since any KB writer could otherwise make the workers "
        "POST chunk texts to an address of their choosing.",
    )
    openai_rpm: int | None = Field(
        None,
        ge=1,
        description="Requests per minute that all workers together may send to each OpenAI-compatible "
        "endpoint (counted in Redis when `redis_url` is set, else in the process); a request over "
        "budget waits for it. Unset: no limit.",
    )
    openai_tpm: int | None = Field(
        None,
        ge=1,
        description="Tokens per minute (as counted by `openai_tokenizer`) that all workers together may "
        "send to each OpenAI-compatible endpoint; a request over budget waits. Unset: no limit.",
    )
    openai_rate_window_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="The sliding window `openai_rpm` / `openai_tpm` count in (60: per minute, as their "
        "names say; a shorter window with proportionally smaller budgets smooths bursts).",
    )
    openai_batch_size: int = Field(
        64, ge=1, le=2048, description="Most texts in one request to an OpenAI-compatible endpoint."
    )
    openai_batch_tokens: int = Field(
        8192,
        ge=1,
        description="Most tokens (as counted by `openai_tokenizer`) in one request to an "
        "OpenAI-compatible endpoint; a longer text goes alone.",
    )
    openai_max_tokens: int = Field(
        8191,
        ge=16,
        description="The most tokens an `openai:` model reads per text (chunk sizes above it are refused).",
    )
    openai_tokenizer: Path | None = Field(
        None,
        description="A local `tokenizer.json` (HuggingFace `tokenizers`) that counts tokens as the "
        "`openai:` model does, for chunk sizes and the token budgets. Unset: the bundled MiniLM "
        "tokenizer, an approximation (within ~10-20 % of BPE tokenizers on English prose).",
    )
    openai_timeout_seconds: float = Field(
        60.0, gt=0, description="Timeout of one request to an OpenAI-compatible endpoint."
    )
    api_key: str | None = Field(None, description="The key the CLI sends to a server.")
    server_url: str | None = Field(
        None, description="When set, CLI commands talk to this running server instead of the local data dir."
    )
    host: str = Field("127.0.0.1", description="Address `lorebase serve` listens on.")
    port: int = Field(8000, description="Port `lorebase serve` listens on.")
    workers: int = Field(2, ge=0, description="Embedded worker threads started by `serve` (0: API only).")
    public_url: str | None = Field(
        None,
        description="Base URL used in links the API returns (tracking_url) and in notifications "
        "(default there: `http://<host>:<port>`).",
    )
    draft_ttl_hours: float = Field(24.0, gt=0, description="Drafts expire this long after their last change.")
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, description="Largest accepted upload, per file.")
    vector_cache_mb: int = Field(
        1024,
        ge=0,
        description="Memory each process may use to search the sqlite store's vectors exactly from "
        "RAM instead of scanning `vec0` (a KB costs 1.5 MB per 1,000 chunks at 384 dimensions; least "
        "recently searched KBs leave first; a KB larger than this is scanned as before). 0: off.",
    )
    onnx_queries: bool = Field(
        True,
        description="In `lorebase serve`, embed the search queries of KBs on the fp32 model "
        "(`local:all-MiniLM-L6-v2`) on ONNX Runtime fp32: the same vectors (the build checks "
        "cosine >= 0.9999 to torch), about twice as fast for one query. The file is built once per "
        "data dir on the first search (~5 s, in the background; torch answers meanwhile).",
    )
    keyword_cache_mb: int = Field(
        1024,
        ge=0,
        description="Memory each process may use to rank the sqlite and pgvector stores' keyword "
        "searches by BM25 from an inverted index in RAM (over the KB's own rows) instead of asking "
        "FTS5 or `ts_rank_cd` (a KB costs ~1 MB per 1,000 chunks of 200 tokens; least recently "
        "searched KBs leave first; a KB larger than this is searched by SQL as before). 0: off.",
    )
    query_log_delay_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Searches are logged by a background writer in batches, at most this long after "
        "the search (a crash loses at most this much of the query log; a clean shutdown loses "
        "nothing). 0: each search writes its row before it answers.",
    )
    embed_batch_size: int = Field(
        64, ge=1, description="Chunks per embedding batch (batches span documents)."
    )
    embed_threads: int = Field(
        0,
        ge=0,
        description="Intra-op threads of the local embedding model (torch or ONNX Runtime); 0: the "
        "runtime's default, one per core.",
    )
    jobs: JobSettings = Field(default_factory=JobSettings, description="Job leases, retries and polling.")
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings, description="Chunking defaults.")
    crawl: CrawlSettings = Field(default_factory=CrawlSettings, description="Web crawling.")
    notify: NotifySettings = Field(
        default_factory=NotifySettings, description="Pipeline-end notifications (webhooks, email)."
    )
    smtp: SmtpSettings = Field(default_factory=SmtpSettings, description="Mail server for notifications.")
    limits: LimitSettings = Field(
        default_factory=LimitSettings, description="Per-workspace quotas and per-key rate limits."
    )
    parse: ParseSettings = Field(
        default_factory=ParseSettings, description="Resource limits for parsing uploaded files."
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="What is kept, and for how long."
    )
    scheduler: SchedulerSettings = Field(
        default_factory=SchedulerSettings, description="Periodic work: cleanup, retention, refreshes."
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins allowed to call the API from a browser (CORS); empty "
        "(the default) allows none but the server's own pages.",
    )
    idempotency_ttl_seconds: float = Field(
        86400.0,
        gt=0,
        description="How long an `Idempotency-Key` and the response it replays are kept, in seconds.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _s3_has_bucket(self) -> Settings:
        if self.blob_store == "s3" and not self.s3.bucket:
            raise ValueError("blob_store = s3 needs a bucket: set LOREBASE_S3__BUCKET")
        return self

    @model_validator(mode="after")
    def _store_follows_database(self) -> Settings:
        """On PostgreSQL the vectors live beside the chunks in pgvector, and blobs in the database
        (so every worker machine reads them), unless told otherwise."""
        if not self.database_url:
            return self
        with contextlib.suppress(ArgumentError):  # a malformed URL is reported at start-up
            if make_url(self.database_url).get_backend_name() == "postgresql":
                if "vector_store" not in self.model_fields_set:
                    self.vector_store = "pgvector"
                if "blob_store" not in self.model_fields_set:
                    self.blob_store = "database"
        return self

    @property
    def resolved_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'lorebase.db'}"

    @property
    def resolved_public_url(self) -> str:
        """Base of links in messages sent without a request at hand (notifications)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
