"""``lorebase mcp``: the MCP server on stdio, for desktop agents and IDEs that start it as a
subprocess.

Two modes, as every CLI command has (DESIGN.md §8):

* **local** (no ``LOREBASE_SERVER_URL``): the tools call the services on the local data dir as
  the machine's owner, like ``lorebase search``: the workspace of ``--workspace`` (default
  ``default``) with every scope, or, without ``--workspace`` and with ``LOREBASE_API_KEY`` set,
  that key's workspace and scopes. ``--read-only`` keeps an agent to ``read``. Documents it adds
  are processed by worker threads of this process (``--workers``, 0 to leave them to a running
  ``lorebase serve`` or ``lorebase worker`` on the same data dir).
* **remote** (``LOREBASE_SERVER_URL`` set): the tools call that server's REST API with
  ``LOREBASE_API_KEY`` (``remote.py``); the server decides scopes and workspace.

stdout carries the protocol: the SDK points fd 1 at stderr while it serves, so logs and any
stray output of this process or its children go to stderr.
"""

from __future__ import annotations

from dataclasses import replace

import anyio

from lorebase.assembly import assemble
from lorebase.errors import InvalidInput
from lorebase.mcp.backend import Backend, LocalBackend
from lorebase.mcp.remote import RemoteBackend
from lorebase.mcp.tools import build_server
from lorebase.runtime import Runtime
from lorebase.services.auth import Principal
from lorebase.settings import Settings


def serve(backend: Backend) -> None:
    """Serve the tools over this process's stdin and stdout until the client closes them."""
    anyio.run(build_server(lambda _ctx: backend).run_stdio_async)


def serve_local(runtime: Runtime, principal: Principal, *, read_only: bool, workers: int) -> None:
    if read_only:
        principal = replace(principal, scopes=("read",))
    process = assemble(runtime.settings, role="cli", concurrency=workers, runtime=runtime).start()
    try:
        serve(LocalBackend(runtime, principal))
    finally:
        process.stop()
        runtime.close()


def serve_remote(settings: Settings, *, read_only: bool) -> None:
    if not settings.server_url:
        raise InvalidInput("LOREBASE_SERVER_URL is not set")
    if not settings.api_key:
        raise InvalidInput("LOREBASE_SERVER_URL is set: LOREBASE_API_KEY must hold a key of that server")
    backend = RemoteBackend(settings.server_url, settings.api_key, read_only=read_only)
    serve(backend)
