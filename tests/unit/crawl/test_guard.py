"""Address policy and URL pre-check of the SSRF guard (no sockets; see tests/integration/test_ssrf_guard.py)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from lorebase.crawl.guard import (
    AddressPolicy,
    BlockedAddress,
    blocked_cause,
    parse_ip_literal,
    precheck_url,
)
from lorebase.errors import PermanentError

DEFAULT = AddressPolicy()


@pytest.mark.parametrize(
    ("ip", "category"),
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("93.184.216.34", None),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("100.127.255.254", "shared address space (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "'this network' (0.0.0.0/8)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "special-purpose (not globally routable)"),
        ("198.18.0.1", "special-purpose (not globally routable)"),
        ("2001:4860:4860::8888", None),
        ("2606:4700:4700::1111", None),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private (unique local)"),
        ("fd12:3456::1", "private (unique local)"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "special-purpose (not globally routable)"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
        ("::ffff:100.64.0.1", "IPv4-mapped shared address space (CGNAT)"),
        ("::ffff:8.8.8.8", None),
        ("2002:7f00:1::", "6to4-embedded loopback"),
        ("2002:a00:1::", "6to4-embedded private"),
        ("2002:808:808::", None),
        ("64:ff9b::7f00:1", "NAT64-embedded loopback"),
        ("::7f00:1", "reserved"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo-embedded loopback"),
    ],
)
def test_default_policy_categories(ip: str, category: str | None) -> None:
    assert DEFAULT.refusal("host.example", ip) == category


def test_unparseable_address_is_refused() -> None:
    assert DEFAULT.refusal("host.example", "not-an-ip") == "unparseable"


@pytest.mark.parametrize(
    ("policy", "host", "ip", "allowed"),
    [
        (AddressPolicy(allow_private=True), "x", "127.0.0.1", True),
        (AddressPolicy(allow_private=True), "x", "169.254.169.254", True),
        (AddressPolicy(allowed_hosts=("wiki.corp",)), "wiki.corp", "10.0.0.5", True),
        (AddressPolicy(allowed_hosts=("wiki.corp",)), "WIKI.Corp.", "10.0.0.5", True),
        (AddressPolicy(allowed_hosts=("Wiki.Corp",)), "wiki.corp", "10.0.0.5", True),
        (AddressPolicy(allowed_hosts=("wiki.corp",)), "other.corp", "10.0.0.5", False),
        (AddressPolicy(allowed_hosts=("wiki.corp",)), "sub.wiki.corp", "10.0.0.5", False),
        (AddressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),)), "x", "10.20.1.2", True),
        (AddressPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),)), "x", "10.21.1.2", False),
        (
            AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)),
            "x",
            "::ffff:127.0.0.1",
            True,
        ),
        (AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)), "x", "::1", False),
        (AddressPolicy(allowed_networks=(ipaddress.ip_network("fd00::/8"),)), "x", "fd00::5", True),
        (AddressPolicy(allowed_hosts=("localhost",)), "localhost", "127.0.0.1", True),
        (AddressPolicy(allowed_hosts=("localhost",)), "127.0.0.1", "127.0.0.1", False),
        (DEFAULT, "x", "8.8.8.8", True),
    ],
)
def test_policy_opt_ins(policy: AddressPolicy, host: str, ip: str, allowed: bool) -> None:
    assert (policy.refusal(host, ip) is None) is allowed


@pytest.mark.parametrize(
    ("allowed", "hosts", "networks"),
    [
        (None, (), ()),
        ("", (), ()),
        (" , ,", (), ()),
        ("wiki.corp", ("wiki.corp",), ()),
        ("Wiki.Corp, docs.corp.", ("wiki.corp", "docs.corp"), ()),
        ("10.20.0.0/16", (), ("10.20.0.0/16",)),
        ("10.20.1.2/16", (), ("10.20.0.0/16",)),
        ("192.168.1.5", (), ("192.168.1.5/32",)),
        ("::1", (), ("::1/128",)),
        ("[fd00::1]", (), ("fd00::1/128",)),
        ("fd00::/8", (), ("fd00::/8",)),
        ("wiki.corp,10.0.0.0/8, ::1", ("wiki.corp",), ("10.0.0.0/8", "::1/128")),
        (["wiki.corp", "10.0.0.0/8,docs.corp"], ("wiki.corp", "docs.corp"), ("10.0.0.0/8",)),
    ],
)
def test_from_settings(
    allowed: str | list[str] | None, hosts: tuple[str, ...], networks: tuple[str, ...]
) -> None:
    policy = AddressPolicy.from_settings(False, allowed)
    assert policy.allowed_hosts == hosts
    assert tuple(str(net) for net in policy.allowed_networks) == networks
    assert policy.allow_private is False
    assert AddressPolicy.from_settings(True, allowed).allow_private is True


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "wiki.corp/16", "fd00::zz", "two words"])
def test_from_settings_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="allowed hosts"):
        AddressPolicy.from_settings(False, bad)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("example.com", None),
        ("1e100.net", None),
        ("08.0.0.1", None),
        ("1.2.3.4.5", None),
        ("127.0.0.1 x", None),
        ("deadbeef", None),
        ("[not-ipv6]", None),
    ],
)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    address = parse_ip_literal(host)
    assert (None if address is None else str(address)) == expected


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1:8080/admin", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped loopback"),
        ("http://[::ffff:a00:1]/", "IPv4-mapped private"),
        ("https://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/", "shared address space (CGNAT)"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("HTTP://user:pw@192.168.1.1:81/", "private"),
        ("http://[fe80::1%25eth0]/", "link-local"),
    ],
)
def test_precheck_refuses_ip_literals(url: str, category: str) -> None:
    with pytest.raises(BlockedAddress) as info:
        precheck_url(url, DEFAULT)
    assert info.value.category == category
    assert url in str(info.value)
    assert "LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://8.8.8.8/",
        "http://[2001:4860:4860::8888]/",
        "http://localhost/",  # host names are resolved and checked at connect time, not here
        "http://intranet.example/",
    ],
)
def test_precheck_lets_public_literals_and_names_through(url: str) -> None:
    precheck_url(url, DEFAULT)


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://127.0.0.1/", AddressPolicy(allow_private=True)),
        ("http://10.1.2.3/", AddressPolicy.from_settings(False, "10.0.0.0/8")),
        ("http://2130706433/", AddressPolicy.from_settings(False, "127.0.0.1")),
    ],
)
def test_precheck_honours_opt_ins(url: str, policy: AddressPolicy) -> None:
    precheck_url(url, policy)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "javascript:alert(1)",
        "mailto:x@example.com",
        "data:text/plain,hi",
        "example.com/no-scheme",
        "http:///no-host",
        "http://[::1/",
    ],
)
def test_precheck_refuses_other_schemes_and_broken_urls(url: str) -> None:
    with pytest.raises(PermanentError) as info:
        precheck_url(url, AddressPolicy(allow_private=True))
    assert not isinstance(info.value, BlockedAddress)
    assert "refused to fetch" in str(info.value)


def test_blocked_address_message_and_details() -> None:
    error = BlockedAddress("http://10.0.0.1/", "10.0.0.1", "private")
    assert str(error) == (
        "refused to fetch http://10.0.0.1/: 10.0.0.1 is a private address (crawling private networks is off; "
        "set LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS=true or add the host to LOREBASE_CRAWL__ALLOWED_HOSTS)"
    )
    assert error.details == {"target": "http://10.0.0.1/", "ip": "10.0.0.1", "category": "private"}
    assert error.code == "blocked_address"
    assert isinstance(error, PermanentError)
    assert "is an IPv4-mapped loopback address" in str(
        BlockedAddress("h:1", "::ffff:7f00:1", "IPv4-mapped loopback")
    )
    assert "is an unspecified address" in str(BlockedAddress("h:1", "0.0.0.0", "unspecified"))


def test_blocked_cause_walks_cause_and_context() -> None:
    blocked = BlockedAddress("h:1", "127.0.0.1", "loopback")
    assert blocked_cause(blocked) is blocked

    try:
        try:
            raise blocked
        except BlockedAddress as exc:
            raise httpx.ConnectError("wrapped") from exc
    except httpx.ConnectError as wrapped:
        assert blocked_cause(wrapped) is blocked

    try:
        try:
            raise blocked
        except BlockedAddress:
            raise RuntimeError("during handling") from None
    except RuntimeError as suppressed:
        # ``from None`` keeps the context but hides it; the guard still finds it.
        assert blocked_cause(suppressed) is blocked

    assert blocked_cause(httpx.ConnectError("plain")) is None
    assert blocked_cause(ValueError("x")) is None
