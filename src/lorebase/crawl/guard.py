"""SSRF defence: the crawler never reaches loopback, private, link-local or other internal addresses.

A crawl source is a URL typed by a user, and every page it links to is chosen by a stranger. Left
alone, the crawler would happily fetch ``http://169.254.169.254/`` (cloud credentials),
``http://localhost:8080/admin`` or ``http://10.0.0.7/`` and store the answer in a searchable
knowledge base. So every outgoing connection is checked, and the check sits where it cannot be
bypassed:

* ``GuardedBackend`` is httpcore's *network backend*: it resolves the host name once, checks every
  address, and connects to the exact IP it checked. There is no second lookup an attacker's DNS
  could answer differently (DNS rebinding), and every connection, including each redirect hop and
  each reconnect, passes through it. TLS still verifies the certificate against the host name,
  because httpcore starts TLS with the origin's name, not the IP.
* ``precheck_url`` rejects non-http(s) URLs and refused IP literals in every spelling the system
  resolver accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]``)
  before anything is queued or fetched, with a clear message. It is a convenience, not the
  defence: host names are only resolved, and checked, in the backend.
* ``guarded_client`` builds the ``httpx.AsyncClient`` with that backend, without proxies (a proxy
  would make the proxy the peer and hide the real target) and without following redirects (the
  crawler follows them itself, so every hop is checked against robots.txt and scope as well).

Only globally routable unicast addresses are allowed. Intranet crawls and tests opt out with
``allow_private_networks`` or name the hosts and networks they may reach in ``allowed_hosts``.

Exceptions: ``BlockedAddress`` raised in the backend reaches the caller of ``client.get`` *as
itself*. httpx only translates httpcore's own exception classes (``map_httpcore_exceptions``) and
re-raises anything else unchanged. ``blocked_cause`` still searches the ``__cause__``/``__context__``
chain so that callers stay correct if a wrapper (ours or a future httpx) converts it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import httpcore
import httpx

from lorebase.errors import PermanentError

__all__ = [
    "AddressPolicy",
    "BlockedAddress",
    "GuardedBackend",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "blocked_cause",
    "classify_address",
    "guarded_client",
    "parse_ip_literal",
    "precheck_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolver(host, port)`` -> the IP addresses (as strings) the host name resolves to, in preference order.
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOWED_SCHEMES = ("http", "https")
OPT_OUT_HINT = (
    "crawling private networks is off; set LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS=true "
    "or add the host to LOREBASE_CRAWL__ALLOWED_HOSTS"
)

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_RFC1918 = tuple(ipaddress.IPv4Network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# The spellings inet_aton (and so getaddrinfo) reads as IPv4: 1 to 4 parts, decimal, octal or hex.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


class BlockedAddress(PermanentError):
    """A request was refused because its target address is not public (see ``AddressPolicy``).

    Permanent: the same URL will be refused again until the settings change.
    """

    code = "blocked_address"

    def __init__(self, target: str, ip: str, category: str, *, message: str | None = None) -> None:
        text = (
            message
            or f"refused to fetch {target}: {ip} is {_article(category)} {category} address ({OPT_OUT_HINT})"
        )
        super().__init__(text, details={"target": target, "ip": ip, "category": category})
        self.target = target
        self.ip = ip
        self.category = category


def blocked_cause(exc: BaseException) -> BlockedAddress | None:
    """``exc`` itself or the first ``BlockedAddress`` along its ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BlockedAddress):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses the crawler may connect to: public unicast, plus whatever is opted in."""

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        # Host names compare case-insensitively and without a trailing dot: store them canonical.
        object.__setattr__(self, "allowed_hosts", tuple(_canonical_host(host) for host in self.allowed_hosts))

    @classmethod
    def from_settings(cls, allow_private: bool, allowed: str | list[str] | None) -> AddressPolicy:
        """Parse ``wiki.corp, 10.20.0.0/16, 192.168.1.5`` (a bare IP is a /32 or /128 network).

        Raises ValueError for an entry that is neither a host name nor a network.
        """
        items = [allowed] if isinstance(allowed, str) else list(allowed or [])
        hosts: list[str] = []
        networks: list[IPNetwork] = []
        for entry in (part.strip() for item in items for part in item.split(",")):
            if not entry:
                continue
            network = _parse_network(entry)
            if network is not None:
                networks.append(network)
            elif "/" in entry or ":" in entry or " " in entry:
                raise ValueError(f"allowed hosts: {entry!r} is neither a host name nor an IP network")
            else:
                hosts.append(_canonical_host(entry))
        return cls(allow_private, tuple(hosts), tuple(networks))

    def refusal(self, host: str, ip: str) -> str | None:
        """None if connecting to ``ip`` (resolved from ``host``) is allowed, else why not (a category)."""
        if self.allow_private or _canonical_host(host) in self.allowed_hosts:
            return None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return "unparseable"
        if self._in_allowed_network(address):
            return None
        return classify_address(address)

    def _in_allowed_network(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(candidate in network for candidate in candidates for network in self.allowed_networks)


def classify_address(address: IPAddress) -> str | None:
    """None for a globally routable unicast address, else its category ("loopback", "private" ...)."""
    if isinstance(address, ipaddress.IPv4Address):
        return _classify_ipv4(address)
    return _classify_ipv6(address)


def _classify_ipv4(address: ipaddress.IPv4Address) -> str | None:
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "unspecified"),
        (address in _THIS_NETWORK, "'this network' (0.0.0.0/8)"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (any(address in net for net in _RFC1918), "private"),
        # Python 3.11 calls 100.64.0.0/10 neither private nor global: name it explicitly.
        (address in _CGNAT, "shared address space (CGNAT)"),
        (address.is_multicast, "multicast"),
        (address == _BROADCAST, "broadcast"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "special-purpose (not globally routable)"),
    )
    return next((category for matched, category in checks if matched), None)


def _classify_ipv6(address: ipaddress.IPv6Address) -> str | None:
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, ipv4 = embedded
        inner = _classify_ipv4(ipv4)
        if kind == "IPv4-mapped":  # the kernel connects straight to the IPv4 address
            return None if inner is None else f"{kind} {inner}"
        if inner is not None:
            return f"{kind} {inner}"
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address in _UNIQUE_LOCAL, "private (unique local)"),
        (address.is_site_local, "site-local"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "special-purpose (not globally routable)"),
    )
    return next((category for matched, category in checks if matched), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4-embedded", address.sixtofour
    if address.teredo is not None:
        return "Teredo-embedded", address.teredo[1]
    if address in _NAT64:
        return "NAT64-embedded", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address if ``host`` is an IP literal in any form the system resolver accepts, else None.

    Besides the standard forms this reads what ``inet_aton`` reads: ``2130706433``, ``0177.0.0.1``,
    ``0x7f.1``, ``127.1``. Brackets around IPv6 are optional; a zone id (``%eth0``) is kept.
    """
    host = host.strip("[]")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    if not _LEGACY_IPV4.match(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def precheck_url(url: str, policy: AddressPolicy) -> None:
    """Refuse a URL before any connection: non-http(s) schemes and refused IP-literal hosts.

    Host names are not resolved here; the connection layer (``GuardedBackend``) checks them.
    Raises ``PermanentError`` for a bad scheme or missing host, ``BlockedAddress`` for a refused IP.
    """
    try:
        parts = urlsplit(url.strip())
        hostname = parts.hostname
    except ValueError as exc:
        raise PermanentError(f"refused to fetch {url}: malformed URL ({exc})") from exc
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise PermanentError(f"refused to fetch {url}: only http and https URLs can be crawled")
    host = unquote(hostname or "")
    if not host:
        raise PermanentError(f"refused to fetch {url}: the URL has no host")
    address = parse_ip_literal(host)
    if address is None:
        return
    category = policy.refusal(host, str(address))
    if category is not None:
        raise BlockedAddress(url, str(address), category)


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the system resolver (``getaddrinfo``, in a worker thread): unique IPs, in order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves once, checks each address and connects to that exact IP."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolve = resolver or system_resolver
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        allowed = await self._allowed_addresses(host, port, timeout)
        last_error: httpcore.ConnectError | None = None
        for ip in allowed:  # e.g. an AAAA record on a host without IPv6 route: try the next one
            try:
                return await self._backend.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                last_error = exc
        assert last_error is not None  # _allowed_addresses never returns an empty list
        raise last_error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress(
            f"unix:{path}",
            path,
            "unix socket",
            message=f"refused to connect to unix socket {path}: not a web address",
        )

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)

    async def _allowed_addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The resolved addresses the policy allows; BlockedAddress if there are none."""
        candidates = await self._candidates(host, port, timeout)
        allowed: list[str] = []
        first_refusal: tuple[str, str] | None = None
        for ip in candidates:
            category = self.policy.refusal(host, ip)
            if category is None:
                allowed.append(ip)
            elif first_refusal is None:
                first_refusal = (ip, category)
        if not allowed:
            assert first_refusal is not None
            raise BlockedAddress(_target(host, port), *first_refusal)
        return allowed

    async def _candidates(self, host: str, port: int, timeout: float | None) -> list[str]:
        literal = parse_ip_literal(host)
        if literal is not None:  # what getaddrinfo would answer, without asking it
            return [str(literal)]
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # socket.gaierror: unknown host, no network
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"could not resolve {host}: no addresses")
        return addresses


def guarded_client(
    policy: AddressPolicy,
    *,
    user_agent: str,
    timeout: float,
    resolver: Resolver | None = None,
    max_connections: int = 20,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every connection goes through ``GuardedBackend``.

    No proxies and no environment (``trust_env=False``): the guard must see the real peer.
    No automatic redirects: the crawler follows them itself, checking each hop.
    """
    ssl_context = httpx.create_ssl_context(trust_env=False)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, limits=limits)
    # httpx 0.28 cannot pass a network backend to its transport, so we swap in a pool built like
    # the one it creates, plus our backend. ``_pool`` is private but has been stable since 0.18;
    # the integration test (tests/integration/test_ssrf_guard.py) fails loudly if that changes.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy, resolver=resolver),
    )
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": user_agent},
        timeout=httpx.Timeout(timeout),
    )


def _parse_network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def _canonical_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" or word.startswith("IPv4") else "a"
