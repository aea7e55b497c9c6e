"""Shared CLI plumbing: one runtime per command, the acting principal, and output helpers."""

from __future__ import annotations

import logging
import os
from typing import Any

from rich.console import Console
from sqlalchemy.engine import make_url

from lorebase.errors import LorebaseError, NotFound
from lorebase.runtime import Runtime
from lorebase.services import kbs
from lorebase.services.auth import Principal, authenticate, local_principal
from lorebase.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "sentence_transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def safe_url(url: str) -> str:
    """A database or broker URL for printing: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unreadable URL>"


def checked(settings: Settings | None = None) -> Settings:
    """The settings of a command that works on the local data dir (refused with a server URL)."""
    settings = settings or get_settings()
    if settings.server_url:
        raise SystemExit(local_only_message("this command", settings.server_url))
    return settings


def local_only_message(command: str, server_url: str) -> str:
    return (
        f"error: {command} works on the local data dir only, and LOREBASE_SERVER_URL is set "
        f"({server_url}); unset it to run it here, on the server's machine"
    )


def runtime(settings: Settings | None = None) -> Runtime:
    return Runtime(checked(settings))


def principal(rt: Runtime, workspace: str | None) -> Principal:
    """Local mode acts as a workspace: the one of LOREBASE_API_KEY when set, else by name."""
    if workspace is None and rt.settings.api_key:
        return authenticate(rt.db, rt.settings.api_key)
    return local_principal(rt.db, workspace or "default")


def resolve_kb(rt: Runtime, p: Principal, name_or_id: str) -> dict[str, Any]:
    kb = kbs.find_by_name(rt, p, name_or_id)
    if kb is None:
        raise NotFound(f"no knowledge base named {name_or_id!r} in this workspace")
    return kb


def fail(exc: LorebaseError) -> None:
    err_console.print(f"[bold red]error:[/] {exc.message}")
    if exc.details:
        err_console.print(exc.details)
