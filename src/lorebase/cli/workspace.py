"""``lorebase workspace show|set``: a workspace's tier (priority, worker pool) and retention.

On the local data dir by name; with ``LOREBASE_SERVER_URL`` set, through ``GET/PATCH
/api/v1/workspace`` (the key's workspace: NAME must be its name; ``set`` needs an admin key).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from lorebase.cli import common, remote
from lorebase.cli.common import console
from lorebase.client import Client
from lorebase.errors import InvalidInput, LorebaseError

app = typer.Typer(help="A workspace's tier (priority, worker pool) and retention.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The workspace's name.")]
NO_POOL = "none"


def _print(ws: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(ws, indent=2))
        return
    retention = ", ".join(
        f"{k} {'default' if v is None else v}" for k, v in (ws.get("retention") or {}).items()
    )
    console.print(
        f"workspace {ws['name']} ({ws['id']}): priority {ws['priority']}, "
        f"pool {ws['pool'] or '(default workers)'}; retention: {retention}",
        markup=False,
        highlight=False,
    )


def _changes(
    priority: int | None, pool: str | None, originals: float | None, query_logs: float | None
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if priority is not None:
        changes["priority"] = priority
    if pool is not None:
        changes["pool"] = None if pool == NO_POOL else pool
    retention = {
        k: (None if v < 0 else v)
        for k, v in (("originals_days", originals), ("query_logs_days", query_logs))
        if v is not None
    }
    if retention:
        changes["retention"] = retention
    if not changes:
        raise typer.BadParameter("nothing to change: give --priority, --pool or a --retain-… option")
    return changes


def _same_workspace(lb: Client, name: str) -> dict[str, Any]:
    ws = lb.get_workspace().model_dump(mode="json")
    if ws["name"] != name:
        raise InvalidInput(f"the server's key is of workspace {ws['name']!r}, not {name!r}")
    return ws


def _show_remote(lb: Client, *, name: str, as_json: bool) -> None:
    _print(_same_workspace(lb, name), as_json)


def _set_remote(lb: Client, *, name: str, as_json: bool, **options: Any) -> None:
    _same_workspace(lb, name)
    changes = _changes(
        options["priority"],
        options["pool"],
        options["retain_originals_days"],
        options["retain_query_logs_days"],
    )
    _print(lb.patch_workspace(**changes).model_dump(mode="json"), as_json)


AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("show")
@remote.or_remote(_show_remote)
def show(name: Name, as_json: AsJson = False) -> None:
    """Show a workspace's priority, worker pool and retention."""
    from lorebase.services import workspaces

    rt = common.runtime()
    try:
        _print(workspaces.get_workspace(rt.db, workspaces.find_workspace_id(rt.db, name)), as_json)
    except LorebaseError as exc:
        common.fail(exc)
        raise typer.Exit(1) from None


@app.command("set")
@remote.or_remote(_set_remote)
def set_(
    name: Name,
    priority: Annotated[
        int | None, typer.Option(help="Added to the priority of its jobs (-100..100; 0: normal).")
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help=f"The worker pool that takes its jobs (`lorebase worker --pool`); {NO_POOL!r}: the default workers."
        ),
    ] = None,
    retain_originals_days: Annotated[
        float | None, typer.Option(help="Days originals are kept after indexing (0: keep; -1: the default).")
    ] = None,
    retain_query_logs_days: Annotated[
        float | None, typer.Option(help="Days query logs are kept (0: keep; -1: the default).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Change a workspace's tier or retention; its pending jobs move to the new priority and pool."""
    from lorebase.services import workspaces

    changes = _changes(priority, pool, retain_originals_days, retain_query_logs_days)
    rt = common.runtime()
    try:
        ws_id = workspaces.find_workspace_id(rt.db, name)
        _print(workspaces.update_workspace(rt.db, ws_id, **changes), as_json)
    except LorebaseError as exc:
        common.fail(exc)
        raise typer.Exit(1) from None
