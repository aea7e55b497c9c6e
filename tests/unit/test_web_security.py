"""The dashboard's redirect guard and the sign-in link ``lorebase serve`` prints."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from lorebase.cli.main import sign_in_url
from lorebase.settings import Settings
from lorebase.web.security import is_dashboard_path, safe_next


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "",
        None,
    ],
)
def test_safe_next_refuses_anything_but_a_local_path(target: str | None) -> None:
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/", "/jobs", "/kbs/abc?status=failed", "/search?kb=1#top"])
def test_safe_next_keeps_local_paths(target: str) -> None:
    assert safe_next(target) == target


def test_dashboard_paths_exclude_the_api_and_the_openapi_pages() -> None:
    assert (
        is_dashboard_path("/") and is_dashboard_path("/kbs/1/queries") and is_dashboard_path("/static/app.js")
    )
    assert not is_dashboard_path("/api/v1/kbs") and not is_dashboard_path("/docs")
    assert not is_dashboard_path("/kbsx") and not is_dashboard_path("/healthz")


def test_sign_in_url_shows_loopback_for_a_wildcard_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    url = sign_in_url(settings, "0.0.0.0", 8123, "lb_secret")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:8123", "/login")
    assert parse_qs(parts.query) == {"token": ["lb_secret"], "next": ["/"]}


def test_sign_in_url_uses_the_public_url_when_set(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, public_url="https://kb.example.org/", _env_file=None)  # type: ignore[call-arg]
    assert sign_in_url(settings, "127.0.0.1", 8000, "k").startswith("https://kb.example.org/login?token=k")
