"""A real ``lorebase serve`` on a loopback port and headless Debian chromium driven by Playwright.

The server is the CLI itself in a subprocess (its printed sign-in link is what a user would
open), on a temporary data dir (and, with ``LOREBASE_TEST_DATABASE=postgres``, a database of
its own). No browser is downloaded: Playwright drives ``/usr/bin/chromium``; without it the
tests are skipped, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import testdb
from support.cluster import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SIGN_IN = re.compile(r"(http://\S+/login\?token=(\S+?)&next=\S*)")


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: apt-get install chromium (Playwright uses Debian's browser)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Server:
    """A running ``lorebase serve``: its base URL, the printed sign-in link and the key in it."""

    url: str
    sign_in_url: str
    key: str
    data_dir: Path
    env: dict[str, str]
    log: Path
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def start_worker(self) -> None:
        """A separate ``lorebase worker`` process on the same data dir."""
        log = (self.data_dir.parent / "worker.log").open("ab")
        cmd = [sys.executable, "-m", "lorebase.cli.main", "worker", "--concurrency", "1"]
        self.extra.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def stop_workers(self) -> None:
        """Stop the ``lorebase worker`` processes started so far (they drain first)."""
        while self.extra:
            _stop(self.extra.pop())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # drains: jobs checkpoint and release their leases
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(tmp_path: Path, workers: int) -> Iterator[Server]:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {
        **os.environ,
        "LOREBASE_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LOREBASE_JOBS__POLL_SECONDS": "0.1",
        "LOREBASE_JOBS__LEASE_SECONDS": "4",
        "LOREBASE_JOBS__HEARTBEAT_SECONDS": "1",
    }
    if url := testdb.database_url_for(data_dir):
        env["LOREBASE_DATABASE_URL"] = url
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "lorebase.cli.main", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    server: Server | None = None
    try:
        deadline = time.monotonic() + 120
        while server is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"lorebase serve exited {proc.returncode}:\n{log.read_text()}")
            found = SIGN_IN.search(log.read_text(errors="replace"))
            if found:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        server = Server(
                            f"http://127.0.0.1:{port}", found.group(1), found.group(2), data_dir, env, log
                        )
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        if server is None:
            raise AssertionError(f"lorebase serve did not come up:\n{log.read_text()}")
        yield server
    finally:
        for extra in server.extra if server else []:
            _stop(extra)
        _stop(proc)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``lorebase serve`` with two embedded worker threads."""
    _require_chromium()
    yield from _serve(tmp_path, workers=2)


@pytest.fixture
def api_only_server(tmp_path: Path) -> Iterator[Server]:
    """``lorebase serve --workers 0``: nothing runs until a test starts a worker."""
    _require_chromium()
    yield from _serve(tmp_path, workers=0)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser per module, stopped when the module ends: Playwright's sync API keeps an event
    loop marked running in the main thread while it lives, and ``asyncio.run`` in any later test
    (the crawler's, the SSRF guard's) would then refuse to start."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@dataclass
class Watched:
    """A page, and every dialog (``alert``...) and CSP violation it produced."""

    page: Any
    dialogs: list[str]
    csp_violations: list[str]

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    dialogs: list[str] = []
    violations: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    pg.on("dialog", on_dialog)
    pg.on("console", on_console)
    yield Watched(pg, dialogs, violations)
    context.close()
