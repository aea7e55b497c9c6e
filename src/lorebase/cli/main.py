"""The ``lorebase`` command line (DESIGN.md §8). Commands call the same services as the API."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated, Any

import typer

from lorebase.cli import common, remote, render
from lorebase.cli import workspace as workspace_cli
from lorebase.cli.common import console, err_console
from lorebase.cli.options import ingest_options, settings_patch
from lorebase.errors import LorebaseError
from lorebase.settings import Settings, get_settings

app = typer.Typer(
    help="lorebase: documents and websites into searchable knowledge bases.", no_args_is_help=True
)
kb_app = typer.Typer(help="Manage knowledge bases.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(kb_app, name="kb")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(workspace_cli.app, name="workspace")

Workspace = Annotated[str | None, typer.Option("--workspace", "-w", help="Workspace to act in (local mode).")]


def _run(fn: Any) -> Any:
    try:
        return fn()
    except LorebaseError as exc:
        common.fail(exc)
        raise typer.Exit(1) from None


def sign_in_url(settings: Settings, host: str, port: int, key: str) -> str:
    """The dashboard link that signs a browser in with ``key`` (as Jupyter prints its token URL);
    a wildcard listen address is shown as loopback, which is what a local browser can open."""
    from urllib.parse import urlencode

    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    base = (settings.public_url or f"http://{shown}:{port}").rstrip("/")
    return f"{base}/login?{urlencode({'token': key, 'next': '/'})}"


@app.command()
@remote.local_only("lorebase serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Embedded worker threads, in a child process of the server (0: API only)."),
    ] = None,
) -> None:
    """Run the API with embedded workers (migrations are applied first)."""
    import uvicorn

    from lorebase.app import create_app
    from lorebase.services.auth import create_key, has_any_key

    common.setup_logging()
    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    rt = common.runtime(settings)
    if not has_any_key(rt.db):
        key, _ = create_key(rt.db, workspace="default", name="first key")
        # plain print: a key must never be wrapped across lines
        print(f"Created the first API key (shown once, keep it):\n\n    {key}\n", flush=True)
        print(f"Try: curl -H 'Authorization: Bearer {key}' http://{host}:{port}/api/v1/kbs\n", flush=True)
        print(
            f"Open the dashboard (signs you in):\n\n    {sign_in_url(settings, host, port, key)}\n",
            flush=True,
        )
    else:
        print("API keys exist in this data dir; `lorebase keys create` makes another.", flush=True)
    rt.close()
    uvicorn.run(
        create_app(
            settings,
            workers=workers,
            freeze_heap=True,
            worker_process=settings.jobs.serve_worker_process,
        ),
        host=host,
        port=port,
        log_level="info",
    )


@app.command()
@remote.local_only("lorebase worker")
def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            help="Worker threads (embedded) or pool processes (Celery); an RQ worker runs one job at a time."
        ),
    ] = 2,
    queues: Annotated[
        str | None,
        typer.Option(
            help="The kinds of jobs this worker takes, comma-separated: crawl, process, embed "
            "(default: all), e.g. embedding on one machine and crawling on others."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this process's Prometheus instruments (job durations, embedding latency, "
            "crawl fetches) on this port, at LOREBASE_HOST (embedded executor only; the API's "
            "/metrics has the database's figures).",
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="Take only the jobs of workspaces placed in this worker pool (`lorebase workspace "
            "set NAME --pool NAME`); without it, only the jobs of workspaces in no pool.",
        ),
    ] = None,
) -> None:
    """Run background jobs until SIGTERM/SIGINT (which drains).

    With the embedded executor the worker claims jobs from the shared database; with
    LOREBASE_EXECUTOR=celery or rq it runs a Celery or RQ worker that takes job messages from
    the broker (the job table still decides what runs)."""
    from lorebase.assembly import assemble
    from lorebase.services.workspaces import check_pool

    common.setup_logging()
    settings = get_settings()
    try:
        pool = check_pool(pool)
    except LorebaseError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pool") from None
    if settings.executor != "embedded":
        if metrics_port is not None:  # jobs run in pool/work-horse processes, not in this one
            hint = "--metrics-port"
            raise typer.BadParameter(f"{hint} is for the embedded executor", param_hint=hint)
        _broker_worker(settings, concurrency=concurrency, queues=queues, pool=pool)
        return
    kinds = _queue_kinds(queues)
    process = assemble(
        common.checked(settings), role="worker", concurrency=concurrency, kinds=kinds, pool=pool
    )
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from lorebase.metrics import REGISTRY

        start_http_server(metrics_port, addr=settings.host, registry=REGISTRY)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    process.start(freeze_heap=True)
    crawlers = settings.jobs.crawl_workers
    extra = f" (+{crawlers} for crawls)" if crawlers and concurrency else ""
    where = f" of pool {pool!r}" if pool else ""
    console.print(
        f"worker started with {concurrency} threads{extra} for {', '.join(kinds)} jobs{where}"
        f" on {common.safe_url(settings.resolved_database_url)}"
    )
    stop.wait()
    console.print("draining: running jobs checkpoint and release their leases")
    process.stop(drain_timeout=60)


def _queue_kinds(queues: str | None) -> tuple[str, ...]:
    from lorebase.tasks import REGISTRY

    try:
        return REGISTRY.parse_kinds(queues)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--queues") from None


def _broker_worker(settings: Settings, *, concurrency: int, queues: str | None, pool: str | None) -> None:
    kinds = _queue_kinds(queues)
    if concurrency < 1:
        raise typer.BadParameter("a Celery or RQ worker needs at least 1", param_hint="--concurrency")
    common.runtime(settings).close()  # checks the settings and applies migrations, once, here
    console.print(
        f"{settings.executor} worker: queues {', '.join(kinds)} on {common.safe_url(settings.resolved_database_url)}"
    )
    from lorebase.assembly import run_broker_worker

    run_broker_worker(settings, concurrency=concurrency, kinds=kinds, pool=pool)


@app.command()
@remote.or_remote(remote.ingest)
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Files, folders or http(s) URLs to crawl.")],
    kb: Annotated[str, typer.Option("--kb", help="Knowledge base name (created when new).")],
    strategy: Annotated[str | None, typer.Option(help="Chunking strategy: recursive or structure.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in model tokens.")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Crawl: pages fetched at most (100).")] = None,
    max_depth: Annotated[int | None, typer.Option(help="Crawl: links followed from the URL (3).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the pipeline to the end.")] = True,
    workers: Annotated[int, typer.Option(help="Worker threads this command runs while it waits.")] = 2,
    workspace: Workspace = None,
) -> None:
    """Create or extend a knowledge base from files, folders and websites, with a live progress bar.

    A website the knowledge base already crawls is refreshed: only changed pages are re-processed."""
    from lorebase.cli.ingest import ingest as do_ingest

    common.setup_logging()
    config, crawl = ingest_options(strategy, chunk_size, max_pages, max_depth)
    rt = common.runtime()
    result = _run(
        lambda: do_ingest(
            rt,
            common.principal(rt, workspace),
            paths,
            kb_name=kb,
            config=config,
            wait=wait,
            workers=workers,
            crawl=crawl,
        )
    )
    state = result["pipeline"]
    console.print(f"pipeline {state['id']}: [bold]{state['status']}[/] — {state.get('message') or ''}")
    rt.close()
    if state["status"] in ("failed", "cancelled"):
        raise typer.Exit(1)


@app.command()
@remote.or_remote(remote.search)
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    kb: Annotated[str, typer.Option("--kb", help="Knowledge base name or id.")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many results.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, vector or keyword.")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: Workspace = None,
) -> None:
    """Print ranked results for a query."""
    from lorebase.services import search as search_service

    rt = common.runtime()
    p = common.principal(rt, workspace)
    kb_row = _run(lambda: common.resolve_kb(rt, p, kb))
    result = _run(lambda: search_service.search(rt, p, kb_row["id"], query, mode=mode, top_k=top_k))  # type: ignore[arg-type]
    render.search(result, kb_name=kb_row["name"], query=query, mode=mode, as_json=as_json)


@kb_app.command("list")
@remote.or_remote(remote.kb_list)
def kb_list(workspace: Workspace = None) -> None:
    """List knowledge bases."""
    from lorebase.services import kbs

    rt = common.runtime()
    render.kb_list(kbs.list_kbs(rt, common.principal(rt, workspace), limit=1000))


@kb_app.command("show")
@remote.or_remote(remote.kb_show)
def kb_show(name: Annotated[str, typer.Argument(help="Name or id.")], workspace: Workspace = None) -> None:
    """Show one knowledge base as JSON."""
    rt = common.runtime()
    render.kb_show(_run(lambda: common.resolve_kb(rt, common.principal(rt, workspace), name)))


@kb_app.command("delete")
@remote.or_remote(remote.kb_delete)
def kb_delete(
    name: Annotated[str, typer.Argument(help="Name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    workspace: Workspace = None,
) -> None:
    """Delete a knowledge base with its documents, chunks and vectors."""
    from lorebase.services import kbs

    rt = common.runtime()
    p = common.principal(rt, workspace)
    kb = _run(lambda: common.resolve_kb(rt, p, name))
    if not yes:
        typer.confirm(f"Delete {kb['name']} ({kb['counts']['documents']} documents)?", abort=True)
    _run(lambda: kbs.delete_kb(rt, p, kb["id"]))
    console.print(f"deleted {kb['name']}")


@kb_app.command("reindex")
@remote.or_remote(remote.kb_reindex)
def kb_reindex(
    name: Annotated[str, typer.Argument(help="Name or id.")],
    set_: Annotated[
        list[str],
        typer.Option("--set", help="A config change, KEY=VALUE (repeatable): chunking.chunk_size=120"),
    ],
    activate: Annotated[
        str, typer.Option(help="always, if_better (needs --queries/--qrels) or manual.")
    ] = "always",
    queries: Annotated[str | None, typer.Option(help="BEIR queries.jsonl, for --activate if_better.")] = None,
    qrels: Annotated[str | None, typer.Option(help="BEIR qrels .tsv, for --activate if_better.")] = None,
    wait: Annotated[bool, typer.Option(help="Build here with a progress bar until done.")] = True,
    workers: Annotated[int, typer.Option(help="Worker threads while waiting.")] = 2,
    workspace: Workspace = None,
) -> None:
    """Change a KB's chunking, embedding or store: a new version builds beside the live one and
    swaps in when complete (searches keep being answered by the live one meanwhile)."""
    from lorebase.assembly import assemble
    from lorebase.cli.beir import evaluation_body
    from lorebase.cli.follow import follow
    from lorebase.services import versions

    rt = common.runtime()
    p = common.principal(rt, workspace)
    kb = _run(lambda: common.resolve_kb(rt, p, name))
    evaluation = None
    if queries or qrels:
        if not (queries and qrels):
            raise typer.BadParameter("--queries and --qrels go together")
        evaluation = evaluation_body(queries, qrels)
    patch = settings_patch(set_)
    status, out = _run(
        lambda: versions.update_kb(rt, p, kb["id"], config=patch, activate=activate, evaluation=evaluation)
    )
    if status == 200:
        console.print(f"{kb['name']}: changed at once (nothing of the index changes)")
        return
    console.print(f"{kb['name']}: version {out['version']} builds beside version {kb['version']}")
    if not wait:
        console.print(f"pipeline {out['pipeline_id']}")
        return
    process = assemble(rt.settings, role="cli", concurrency=workers, runtime=rt).start()
    try:
        state = follow(rt, p, out["pipeline_id"])
    finally:
        process.stop()
    console.print(state.get("message") or state["status"])
    if state["status"] != "completed":
        raise typer.Exit(1)


@kb_app.command("versions")
@remote.or_remote(remote.kb_versions)
def kb_versions(
    name: Annotated[str, typer.Argument(help="Name or id.")], workspace: Workspace = None
) -> None:
    """List a KB's config versions."""
    from lorebase.services import versions

    rt = common.runtime()
    p = common.principal(rt, workspace)
    kb = _run(lambda: common.resolve_kb(rt, p, name))
    render.versions(_run(lambda: versions.list_versions(rt, p, kb["id"]))["items"])


@kb_app.command("activate")
@remote.or_remote(remote.kb_activate)
def kb_activate(
    name: Annotated[str, typer.Argument(help="Name or id.")],
    version: Annotated[int, typer.Argument(help="The complete or retired version to make live.")],
    workspace: Workspace = None,
) -> None:
    """Make a complete or retired version live (forwards, or a rollback)."""
    from lorebase.services import versions

    rt = common.runtime()
    p = common.principal(rt, workspace)
    kb = _run(lambda: common.resolve_kb(rt, p, name))
    out = _run(lambda: versions.activate(rt, p, kb["id"], version))
    console.print(f"{kb['name']}: version {out['version']} is {out['status']}")


@app.command()
@remote.or_remote(remote.jobs)
def jobs(
    status: Annotated[
        str | None, typer.Option(help="pending, running, succeeded, failed, cancelled or dead.")
    ] = None,
    retry: Annotated[str | None, typer.Option(help="Retry this dead or failed job id.")] = None,
    limit: Annotated[int, typer.Option(help="How many rows.")] = 50,
    workspace: Workspace = None,
) -> None:
    """Inspect jobs; retry dead ones."""
    from lorebase.services import jobs as job_service

    rt = common.runtime()
    p = common.principal(rt, workspace)
    if retry:
        job = _run(lambda: job_service.retry_job(rt, p, retry))
        console.print(f"job {job['id']} is {job['status']} again")
        return
    data = _run(lambda: job_service.list_jobs(rt, p, status=status, kb_id=None, limit=limit, offset=0))
    render.jobs(data, job_service.queue_stats(rt, p))


@keys_app.command("create")
@remote.or_remote(remote.keys_create)
def keys_create(
    workspace: Annotated[str, typer.Option(help="Workspace (created when new).")] = "default",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: read (list, get, search), write (also create, change, delete), "
            "admin (also manage keys over the API). Each includes the ones before it."
        ),
    ] = "read,write,admin",
    expires_in_days: Annotated[
        float | None, typer.Option(help="Expire the key this many days from now (default: never).")
    ] = None,
) -> None:
    """Print a new API key (shown once; only its hash is stored)."""
    from datetime import timedelta

    from lorebase.db.models import utcnow
    from lorebase.services.auth import create_key

    rt = common.runtime()
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days is not None else None
    key, row = _run(
        lambda: create_key(rt.db, workspace=workspace, name=name, scopes=scopes, expires_at=expires)
    )
    until = f", expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else ""
    err_console.print(
        f"created key {row.prefix}… in workspace {workspace!r}, scopes {','.join(row.scopes)}{until} "
        "(shown once):"
    )
    print(key)


@keys_app.command("list")
@remote.or_remote(remote.keys_list)
def keys_list(
    workspace: Annotated[
        str | None, typer.Option(help="Only this workspace's keys (default: every workspace).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List API keys: prefix, workspace, scopes, state and last use (never the secret)."""
    from sqlalchemy import select

    from lorebase.db.models import Workspace
    from lorebase.services.auth import list_keys

    rt = common.runtime()
    ws_id = None
    if workspace is not None:
        with rt.db.read_session() as s:
            ws_id = s.execute(select(Workspace.id).where(Workspace.name == workspace)).scalar_one_or_none()
        if ws_id is None:
            err_console.print(f"[red]error:[/red] no workspace {workspace!r}")
            raise typer.Exit(1)
    items = list_keys(rt.db, workspace_id=ws_id)
    if as_json:
        print(json.dumps(items, default=str, indent=2))
        return
    render.keys(items)


@keys_app.command("revoke")
@remote.or_remote(remote.keys_revoke)
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or its prefix (as `keys list` shows it).")],
) -> None:
    """Revoke an API key: requests with it get 401 from then on."""
    from lorebase.services.auth import revoke_key

    rt = common.runtime()
    row = _run(lambda: revoke_key(rt.db, key))
    console.print(f"revoked key {row['prefix']}… ({row['id']})")


@db_app.command("upgrade")
@remote.local_only("lorebase db upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    rt = common.runtime()
    console.print(f"database at head: {rt.settings.resolved_database_url}")


@app.command()
def mcp(
    workspace: Workspace = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Only the read tools: add_documents is refused.")
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Worker threads for the documents agents add (local mode; 0: none).")
    ] = 1,
) -> None:
    """An MCP server on stdio for desktop agents and IDEs (tools: search, list_knowledge_bases,
    get_document, add_documents, pipeline_status). Works on the local data dir as its owner, or
    on LOREBASE_SERVER_URL with LOREBASE_API_KEY's scopes."""
    from lorebase.mcp import stdio

    common.setup_logging()
    settings = get_settings()
    if settings.server_url:
        if workspace is not None:  # a server's key belongs to one workspace
            raise typer.BadParameter("a server's key decides the workspace", param_hint="--workspace")
        _run(lambda: stdio.serve_remote(settings, read_only=read_only))
        return
    rt = common.runtime(settings)
    p = _run(lambda: common.principal(rt, workspace))
    stdio.serve_local(rt, p, read_only=read_only, workers=workers)


@app.command("eval")
@remote.or_remote(remote.evaluate)
def evaluate(
    kb: Annotated[str, typer.Option("--kb", help="Knowledge base name or id.")],
    queries: Annotated[str, typer.Option(help="BEIR queries.jsonl")],
    qrels: Annotated[str, typer.Option(help="BEIR qrels .tsv")],
    corpus: Annotated[
        str | None, typer.Option(help="BEIR corpus.jsonl: build the KB from it when missing.")
    ] = None,
    modes: Annotated[str, typer.Option(help="Comma-separated modes.")] = "vector,keyword,hybrid",
    limit: Annotated[
        int | None, typer.Option(help="Evaluate only the first N queries that have judgements.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Embedding model of a KB built from --corpus, e.g. local:all-MiniLM-L6-v2-int8 "
            "(default: LOREBASE_EMBEDDER); an existing KB must have been built with it."
        ),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Config version to score (default: the live one).")
    ] = None,
    workspace: Workspace = None,
) -> None:
    """nDCG@10, recall@10, recall@100 (and MRR@10 in the JSON) of a KB on BEIR-format queries
    and qrels; the figures of POST /api/v1/kbs/{id}/evaluations."""
    from lorebase.cli.evaluate import run_eval

    common.setup_logging()
    rt = common.runtime()
    p = common.principal(rt, workspace)
    report = _run(
        lambda: run_eval(
            rt,
            p,
            kb=kb,
            queries=queries,
            qrels=qrels,
            corpus=corpus,
            modes=modes.split(","),
            limit=limit,
            model=model,
            version=version,
        )
    )
    render.evaluation(report, kb)


if __name__ == "__main__":
    app()
