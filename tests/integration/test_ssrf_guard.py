"""The SSRF guard against real sockets: refused targets must never even see a TCP connection.

A small HTTP server listens on loopback and counts the connections it accepts. Each test sends a
request through ``guarded_client`` and checks both the outcome (``BlockedAddress`` arriving as
itself through httpx, or a 200 when opted in) and the server's count.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpcore
import httpx
import pytest

from lorebase.crawl.guard import (
    AddressPolicy,
    BlockedAddress,
    GuardedBackend,
    Resolver,
    guarded_client,
    precheck_url,
)

DEFAULT = AddressPolicy()
LOOPBACK_ONLY = AddressPolicy.from_settings(False, "127.0.0.0/8")


class _Handler(BaseHTTPRequestHandler):
    server: CountingServer

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host", ""))
        target = parse_qs(urlsplit(self.path).query).get("to")
        if target:
            self.send_response(302)
            self.send_header("Location", target[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    """Answers 200 "ok" (or 302 to ``?to=``) and counts every TCP connection it accepts."""

    daemon_threads = True

    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self.address_family = family
        self.connections = 0
        self.hosts: list[str] = []
        self._lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:
            self.connections += 1
        return True


@dataclass
class Servers:
    v4: CountingServer
    v6: CountingServer | None  # None when the machine has no IPv6 loopback

    @property
    def port(self) -> int:
        return self.v4.server_address[1]

    @property
    def port6(self) -> int:
        return (self.v6 or self.v4).server_address[1]

    @property
    def connections(self) -> int:
        return self.v4.connections + (self.v6.connections if self.v6 else 0)


def _start(server: CountingServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def servers() -> Iterator[Servers]:
    v4 = CountingServer(socket.AF_INET, "127.0.0.1")
    try:
        v6: CountingServer | None = CountingServer(socket.AF_INET6, "::1")
    except OSError:
        v6 = None
    running = [server for server in (v4, v6) if server is not None]
    threads = [_start(server) for server in running]
    yield Servers(v4, v6)
    for server in running:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(timeout=5)


def fetch(
    policy: AddressPolicy,
    url: str,
    *,
    resolver: Resolver | None = None,
    timeout: float = 5.0,
    follow_redirects: bool = False,
) -> httpx.Response:
    async def run() -> httpx.Response:
        client = guarded_client(policy, user_agent="lorebase-test", timeout=timeout, resolver=resolver)
        async with client:
            return await client.get(url, follow_redirects=follow_redirects)

    return asyncio.run(run())


def static_resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


# (a) loopback in every spelling, default policy -------------------------------------------------


@pytest.mark.parametrize(
    ("template", "category"),
    [
        ("http://127.0.0.1:{port}/", "loopback"),
        ("http://localhost:{port}/", "loopback"),  # resolved by the real system resolver
        ("http://[::1]:{port6}/", "loopback"),
        ("http://2130706433:{port}/", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/", "IPv4-mapped loopback"),
    ],
)
def test_loopback_is_refused_without_a_connection(servers: Servers, template: str, category: str) -> None:
    url = template.format(port=servers.port, port6=servers.port6)
    with pytest.raises(BlockedAddress) as info:
        fetch(DEFAULT, url)
    assert type(info.value) is BlockedAddress  # not wrapped by httpx
    assert info.value.category == category
    assert "LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS" in str(info.value)
    assert servers.connections == 0


def test_octal_ipv4_is_refused_by_precheck_and_never_reaches_a_socket(servers: Servers) -> None:
    url = f"http://0177.0.0.1:{servers.port}/"
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1 is a loopback address"):
        precheck_url(url, DEFAULT)
    # httpx itself rejects this spelling while parsing the URL, before any transport is involved.
    with pytest.raises(httpx.InvalidURL):
        fetch(DEFAULT, url)
    assert servers.connections == 0


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "[::1]", "[::ffff:127.0.0.1]", "0x7f.1", "127.1"]
)
def test_precheck_agrees_with_the_connection_layer(servers: Servers, host: str) -> None:
    with pytest.raises(BlockedAddress):
        precheck_url(f"http://{host}:{servers.port}/", DEFAULT)


# (b) host names resolving to internal addresses -------------------------------------------------


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("intranet.example", "10.0.0.5 is a private address"),
        ("rebind.example", "127.0.0.1 is a loopback address"),
        ("mixed.example", "10.0.0.5 is a private address"),  # every candidate refused: name the first
    ],
)
def test_resolved_internal_addresses_are_refused(servers: Servers, host: str, message: str) -> None:
    calls: list[str] = []
    resolver = static_resolver(
        {
            "intranet.example": ["10.0.0.5"],
            "rebind.example": ["127.0.0.1"],
            "mixed.example": ["10.0.0.5", "127.0.0.1", "::1"],
        },
        calls,
    )
    with pytest.raises(BlockedAddress, match=message) as info:
        fetch(DEFAULT, f"http://{host}:{servers.port}/", resolver=resolver, timeout=2.0)
    assert f"refused to fetch {host}:{servers.port}" in str(info.value)
    assert calls == [host]  # resolved exactly once
    assert servers.connections == 0


def test_connects_to_the_checked_address_and_keeps_the_host_name(servers: Servers) -> None:
    calls: list[str] = []
    resolver = static_resolver({"docs.internal.example": ["10.0.0.5", "127.0.0.1"]}, calls)
    response = fetch(LOOPBACK_ONLY, f"http://docs.internal.example:{servers.port}/", resolver=resolver)
    assert response.status_code == 200
    assert response.text == "ok"
    assert calls == ["docs.internal.example"]
    assert servers.v4.hosts == [f"docs.internal.example:{servers.port}"]  # the Host header is unchanged


def test_dns_failure_is_an_httpx_connect_error(servers: Servers) -> None:
    with pytest.raises(httpx.ConnectError, match=r"could not resolve nowhere\.example"):
        fetch(DEFAULT, "http://nowhere.example/", resolver=static_resolver({}))
    with pytest.raises(httpx.ConnectError, match="no addresses"):
        fetch(DEFAULT, "http://empty.example/", resolver=static_resolver({"empty.example": []}))


# (c) internal ranges are refused before connecting ----------------------------------------------

INTERNAL = [
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
]


@pytest.mark.parametrize(("ip", "category"), INTERNAL)
def test_internal_ip_literals_are_refused_immediately(ip: str, category: str) -> None:
    started = time.monotonic()
    with pytest.raises(BlockedAddress, match=f"{ip} is a") as info:
        fetch(DEFAULT, f"http://{ip}:81/", timeout=1.0)
    assert info.value.category == category
    assert time.monotonic() - started < 1.0  # refused, not timed out


class _SpyBackend(httpcore.AsyncNetworkBackend):
    """Stands in for the real socket layer and records what would have been connected."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connects.append((host, port))
        raise AssertionError("must not connect")


@pytest.mark.parametrize(("ip", "category"), INTERNAL)
def test_internal_resolved_addresses_never_reach_the_socket_layer(ip: str, category: str) -> None:
    spy = _SpyBackend()
    backend = GuardedBackend(DEFAULT, resolver=static_resolver({"target.example": [ip]}), backend=spy)
    with pytest.raises(BlockedAddress) as info:
        asyncio.run(backend.connect_tcp("target.example", 80, timeout=1.0))
    assert info.value.category == category
    assert info.value.ip == ip
    assert spy.connects == []


# (d) opting in ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [AddressPolicy(allow_private=True), LOOPBACK_ONLY, AddressPolicy.from_settings(False, "127.0.0.1")],
    ids=["allow_private", "allowed_network", "allowed_single_ip"],
)
def test_opt_in_reaches_the_loopback_server(servers: Servers, policy: AddressPolicy) -> None:
    response = fetch(policy, f"http://127.0.0.1:{servers.port}/")
    assert response.status_code == 200
    assert response.text == "ok"
    assert servers.connections == 1


def test_proxy_environment_is_ignored(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would become the peer and hide the real target; trust_env=False keeps it out.
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://192.0.2.1:9")
    response = fetch(LOOPBACK_ONLY, f"http://127.0.0.1:{servers.port}/", timeout=2.0)
    assert response.status_code == 200


# (e) allowed host names -------------------------------------------------------------------------


def test_allowed_host_name_does_not_open_its_address(servers: Servers) -> None:
    policy = AddressPolicy(allowed_hosts=("localhost",))
    response = fetch(policy, f"http://localhost:{servers.port}/")
    assert response.status_code == 200
    assert servers.connections == 1
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1 is a loopback address"):
        fetch(policy, f"http://127.0.0.1:{servers.port}/")
    assert servers.connections == 1


# redirects ----------------------------------------------------------------------------------------


def test_redirects_are_not_followed_by_default(servers: Servers) -> None:
    response = fetch(LOOPBACK_ONLY, f"http://127.0.0.1:{servers.port}/?to=http://10.0.0.1/")
    assert response.status_code == 302
    assert response.headers["Location"] == "http://10.0.0.1/"


def test_every_redirect_hop_is_checked(servers: Servers) -> None:
    policy = AddressPolicy(allowed_hosts=("localhost",))
    start = f"http://localhost:{servers.port}/?to=http://127.0.0.1:{servers.port}/"
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1 is a loopback address"):
        fetch(policy, start, follow_redirects=True)
    assert servers.connections == 1  # the first hop only
