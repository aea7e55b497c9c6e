"""The CLI against a running server (``LOREBASE_SERVER_URL``, with ``LOREBASE_API_KEY``).

:func:`or_remote` is the one seam: a command of ``main.py`` decorated with it runs its remote
twin here, through :class:`lorebase.client.Client`, when a server is configured, and its local
body otherwise. Both print through ``render.py``, so the output is the same. Commands that only
make sense on the local data dir (``serve``, ``worker``, ``db upgrade``) are marked
:func:`local_only` and say so; any other local code path refuses a server in ``common.checked``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer

from lorebase.cli import render
from lorebase.cli.beir import evaluation_body, load_corpus, load_qrels, load_queries
from lorebase.cli.common import console, err_console, fail, local_only_message
from lorebase.cli.options import ingest_options, settings_patch
from lorebase.cli.paths import collect, count, is_url
from lorebase.cli.progress import PipelineBar
from lorebase.client import Client, Conflict, Forbidden, LorebaseError, NotFound
from lorebase.client.models import KnowledgeBase
from lorebase.errors import LorebaseError as AnyLorebaseError
from lorebase.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])
#: files per upload request, and bytes (well under the server's per-request cap of 10 files' limit)
UPLOAD_BATCH_FILES = 50
UPLOAD_BATCH_BYTES = 64 * 1024 * 1024


def or_remote(remote: Callable[..., Any]) -> Callable[[F], F]:
    """Run ``remote(client, **options)`` instead of the decorated command when a server is set."""

    def decorate(local: F) -> F:
        workspace = inspect.signature(local).parameters.get("workspace")
        default = workspace.default if workspace is not None else None

        @functools.wraps(local)
        def command(**options: Any) -> Any:
            settings = get_settings()
            if not settings.server_url:
                return local(**options)
            if options.get("workspace") not in (None, default):
                raise typer.BadParameter(
                    "a server acts in the workspace of LOREBASE_API_KEY; --workspace is for the local data dir",
                    param_hint="--workspace",
                )
            try:
                with Client(settings.server_url, settings.api_key) as lb:
                    return remote(lb, **options)
            except AnyLorebaseError as exc:
                fail(exc)
                raise typer.Exit(1) from None

        return command  # type: ignore[return-value]

    return decorate


def local_only(command: str) -> Callable[[F], F]:
    """A command that only makes sense on the local data dir: with a server set, it says so and
    exits 1 (before doing anything)."""

    def decorate(local: F) -> F:
        @functools.wraps(local)
        def guarded(**options: Any) -> Any:
            settings = get_settings()
            if settings.server_url:
                err_console.print(local_only_message(f"`{command}`", settings.server_url), markup=False)
                raise typer.Exit(1)
            return local(**options)

        return guarded  # type: ignore[return-value]

    return decorate


def follow(lb: Client, pipeline_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """The progress bar, fed by the server's event stream to its ``end``; the final state."""
    with PipelineBar(
        lb.get_pipeline(pipeline_id).model_dump(mode="json"), quiet=quiet, console=console
    ) as bar:
        for event in lb.events(pipeline_id):
            bar.show(event.event, event.data)
    return lb.get_pipeline(pipeline_id).model_dump(mode="json")


def _find(lb: Client, name_or_id: str) -> KnowledgeBase | None:
    try:
        return lb.find_kb(name_or_id)
    except NotFound:
        return None


def _batches(files: list[tuple[Path, str]]) -> Iterator[list[tuple[Path, str]]]:
    batch: list[tuple[Path, str]] = []
    size = 0
    for f, external_id in files:
        length = f.stat().st_size
        if batch and (len(batch) >= UPLOAD_BATCH_FILES or size + length > UPLOAD_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((f, external_id))
        size += length
    if batch:
        yield batch


def ingest(
    lb: Client,
    *,
    paths: list[str],
    kb: str,
    strategy: str | None,
    chunk_size: int | None,
    max_pages: int | None,
    max_depth: int | None,
    wait: bool,
    **_: Any,
) -> None:
    """Draft → uploads → finalize for a new KB; documents and sources added to an existing one.
    The progress bar follows each pipeline's SSE stream to its end."""
    config, crawl = ingest_options(strategy, chunk_size, max_pages, max_depth)
    urls = [raw for raw in paths if is_url(raw)]
    # each file with its path relative to the folder given as its external id: an edited file
    # ingested again replaces its earlier version, as in the local CLI
    files = collect([raw for raw in paths if not is_url(raw)]) if len(urls) < len(paths) else []
    existing = _find(lb, kb)
    pipeline_ids: list[str] = []
    if existing is None:
        draft = lb.create_draft(kb, config=config)
        try:
            for batch in _batches(files):
                lb.upload_files(draft.id, [f for f, _ in batch], external_ids=[x for _, x in batch])
            for url in urls:
                lb.add_web_source(draft.id, url, crawl=crawl)
            done = lb.finalize(draft.id)
        except BaseException:
            _forget(lb, draft.id)
            raise
        pipeline_ids.append(done.pipeline_id)
        what = ", ".join(x for x in (count(len(files), "file"), count(len(urls), "website")) if x)
        console.print(
            f"created knowledge base [bold]{kb}[/] ({done.kb_id}) on {lb.config.base_url} from {what}"
        )
    else:
        skipped = 0
        for batch in _batches(files):
            added = lb.upload_documents(
                existing.id, [f for f, _ in batch], external_ids=[x for _, x in batch]
            )
            pipeline_ids.append(added.pipeline_id)
            skipped += sum(1 for d in added.documents if d.status == "skipped")
        if files:
            console.print(f"adding {len(files)} files to [bold]{kb}[/] ({skipped} unchanged)")
        for url in urls:
            pipeline_ids.append(lb.add_source(existing.id, url, crawl=crawl).pipeline_id)
            console.print(f"crawling {url} into [bold]{kb}[/]")
    states = [lb.get_pipeline(pid).model_dump(mode="json") for pid in pipeline_ids]
    if wait:
        states = [follow(lb, pid) for pid in pipeline_ids]
    state = states[-1]
    console.print(f"pipeline {state['id']}: [bold]{state['status']}[/] — {state.get('message') or ''}")
    if state["status"] in ("failed", "cancelled"):
        raise typer.Exit(1)


def _forget(lb: Client, draft_id: str) -> None:
    with contextlib.suppress(LorebaseError):  # else it expires by itself
        lb.delete_draft(draft_id)


def search(lb: Client, *, query: str, kb: str, top_k: int, mode: str, as_json: bool, **_: Any) -> None:
    found = lb.find_kb(kb)
    result = lb.search(found.id, query, top_k=top_k, mode=mode)  # type: ignore[arg-type]
    render.search(result.model_dump(mode="json"), kb_name=found.name, query=query, mode=mode, as_json=as_json)


def kb_list(lb: Client, **_: Any) -> None:
    render.kb_list(lb.list_kbs(limit=1000).model_dump(mode="json"))


def kb_show(lb: Client, *, name: str, **_: Any) -> None:
    render.kb_show(lb.find_kb(name).model_dump(mode="json"))


def kb_delete(lb: Client, *, name: str, yes: bool, **_: Any) -> None:
    kb = lb.find_kb(name)
    if not yes:
        typer.confirm(
            f"Delete {kb.name} ({kb.counts.documents} documents) on {lb.config.base_url}?", abort=True
        )
    lb.delete_kb(kb.id)
    console.print(f"deleted {kb.name}")


def kb_reindex(
    lb: Client,
    *,
    name: str,
    set_: list[str],
    activate: str,
    queries: str | None,
    qrels: str | None,
    wait: bool,
    **_: Any,
) -> None:
    kb = lb.find_kb(name)
    evaluation = evaluation_body(queries, qrels) if queries and qrels else None
    if bool(queries) != bool(qrels):
        raise typer.BadParameter("--queries and --qrels go together")
    change = lb.patch_kb(kb.id, config=settings_patch(set_), activate=activate, evaluation=evaluation)
    if change.kb is not None:
        console.print(f"{kb.name}: changed at once (nothing of the index changes)")
        return
    console.print(f"{kb.name}: version {change.version} builds beside version {kb.version}")
    if not wait or change.pipeline_id is None:
        console.print(f"pipeline {change.pipeline_id}")
        return
    state = follow(lb, change.pipeline_id)
    console.print(state.get("message") or state["status"])
    if state["status"] != "completed":
        raise typer.Exit(1)


def kb_versions(lb: Client, *, name: str, **_: Any) -> None:
    render.versions(lb.list_versions(lb.find_kb(name).id).model_dump(mode="json")["items"])


def kb_activate(lb: Client, *, name: str, version: int, **_: Any) -> None:
    kb = lb.find_kb(name)
    out = lb.activate_version(kb.id, version)
    console.print(f"{kb.name}: version {out.version} is {out.status}")


def jobs(lb: Client, *, status: str | None, retry: str | None, limit: int, **_: Any) -> None:
    if retry:
        job = lb.retry_job(retry)
        console.print(f"job {job.id} is {job.status} again")
        return
    listed = lb.list_jobs(status=status, limit=limit).model_dump(mode="json")
    render.jobs(listed, lb.queue().model_dump(mode="json"))


def evaluate(
    lb: Client,
    *,
    kb: str,
    queries: str,
    qrels: str,
    corpus: str | None,
    modes: str,
    limit: int | None,
    model: str | None,
    version: int | None,
    **_: Any,
) -> None:
    """The server's evaluation (``POST /kbs/{id}/evaluations``): the figures of ``services/
    evaluations.py``, as the local ``lorebase eval`` computes them."""
    found = _find(lb, kb)
    if found is None:
        if corpus is None:
            raise NotFound(
                f"no knowledge base {kb!r}; pass --corpus to build it from a BEIR corpus", status=404
            )
        found = _build_from_corpus(lb, kb, corpus, model)
    judged = load_qrels(qrels)
    texts = [(q, t) for q, t in load_queries(queries).items() if q in judged][: limit or None]
    body: dict[str, Any] = {
        "queries": [{"id": q, "text": t} for q, t in texts],
        "qrels": {q: judged[q] for q, _ in texts},
        "modes": modes.split(","),
    }
    if version is not None:
        body["versions"] = [version]
    started = lb.create_evaluation(found.id, **body)
    done = lb.wait_evaluation(started.evaluation_id)
    if done.status != "completed":
        raise Conflict(f"the evaluation ended {done.status}: {done.error}", status=409)
    served, per_mode = next(iter((done.results or {}).items()))
    kb_now = lb.get_kb(found.id)
    report = {
        "kb_id": found.id,
        "queries": getattr(done, "queries", len(texts)),
        "version": int(served),
        "model": (kb_now.config.get("embedding") or {}).get("model"),
        "modes": per_mode,
    }
    render.evaluation(report, kb)


def _build_from_corpus(lb: Client, name: str, corpus: str, model: str | None) -> KnowledgeBase:
    records = load_corpus(corpus)
    draft = lb.create_draft(
        name,
        description=f"built from {Path(corpus).name}",
        config={"embedding": {"model": model}} if model else None,
    )
    for i in range(0, len(records), 5000):
        lb.add_text_source(draft.id, records[i : i + 5000])
    done = lb.finalize(draft.id)
    console.print(f"building {name} from {len(records)} corpus documents on {lb.config.base_url}")
    state = follow(lb, done.pipeline_id)
    if state["status"] not in ("completed", "completed_with_errors"):
        raise Conflict(f"building the KB ended {state['status']}: {state.get('error')}", status=409)
    return lb.get_kb(done.kb_id)


def keys_create(
    lb: Client, *, workspace: str, name: str, scopes: str, expires_in_days: float | None, **_: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    if workspace != "default":
        raise typer.BadParameter(
            "a server creates keys in the workspace of LOREBASE_API_KEY", param_hint="--workspace"
        )
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    try:
        key = lb.create_key(name=name, scopes=scopes.split(","), expires_at=expires)
    except Forbidden:
        err_console.print(
            "[bold red]error:[/] creating keys on a server needs an admin key (LOREBASE_API_KEY)"
        )
        raise typer.Exit(1) from None
    err_console.print(
        f"created key {key.prefix}… on {lb.config.base_url}, scopes {','.join(key.scopes)} (shown once):"
    )
    print(key.key)


def keys_list(lb: Client, *, as_json: bool, **_: Any) -> None:
    items = [k.model_dump(mode="json", exclude={"key"}) for k in lb.list_keys().items]  # no secret
    if as_json:
        import json

        print(json.dumps(items, indent=2))
        return
    render.keys(items)


def keys_revoke(lb: Client, *, key: str, **_: Any) -> None:
    found = [k for k in lb.list_keys().items if key in (k.id, k.prefix)]
    if not found:
        raise NotFound(f"no key {key!r} in this workspace", status=404)
    lb.revoke_key(found[0].id)
    console.print(f"revoked key {found[0].prefix}… ({found[0].id})")
