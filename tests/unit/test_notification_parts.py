"""Notification pieces without a pipeline: signing, answer classification, email text, and the
address checks made at validation and again at send time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorebase.crawl.guard import BlockedAddress
from lorebase.errors import PermanentError, TransientError
from lorebase.services import notifications as n
from lorebase.services.config import notification_problems, parse_config, webhook_refusal
from lorebase.settings import Settings

EVENT: dict[str, Any] = {
    "event": "pipeline.ended",
    "kb_id": "kb-1",
    "kb_name": "Handbook",
    "pipeline_id": "p-1",
    "kind": "ingest",
    "status": "completed_with_errors",
    "message": "completed with errors: 3 indexed, 1 failed",
    "error": None,
    "documents_total": 4,
    "documents_indexed": 3,
    "documents_failed": 1,
    "documents_skipped": 0,
    "chunks_indexed": 12,
    "started_at": "2026-01-01T00:00:00+00:00",
    "finished_at": "2026-01-01T00:00:42+00:00",
    "duration_seconds": 42.0,
    "kb_url": "http://127.0.0.1:8000/kbs/kb-1",
    "pipeline_url": "http://127.0.0.1:8000/api/v1/pipelines/p-1",
}


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, _env_file=None, **kw)  # type: ignore[call-arg]


def test_the_signature_covers_timestamp_and_body() -> None:
    body, headers = n.webhook_request("k", "job-1", EVENT)
    ts = headers["X-Lorebase-Timestamp"]
    expected = hmac.new(b"k", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Lorebase-Signature"] == f"sha256={expected}"
    assert headers["X-Lorebase-Delivery"] == "job-1" and headers["X-Lorebase-Event"] == "pipeline.ended"
    assert json.loads(body) == EVENT
    assert (
        n.sign("k", int(ts) + 1, body) != headers["X-Lorebase-Signature"]
    )  # a replay under a new time fails


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, None),
        (204, None),
        (408, TransientError),
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
        (301, PermanentError),
        (400, PermanentError),
        (404, PermanentError),
        (410, PermanentError),
    ],
)
def test_answers_are_classified(status: int, outcome: type[Exception] | None) -> None:
    response = httpx.Response(status, headers={"Retry-After": "7"})
    if outcome is None:
        n._judge("http://x", response)
        return
    with pytest.raises(outcome) as info:
        n._judge("http://x", response)
    if outcome is TransientError and status in (429, 503):
        assert info.value.retry_after == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("codes", "outcome"),
    [
        ([421], TransientError),
        ([450, 451], TransientError),
        ([550], PermanentError),
        ([450, 550], PermanentError),
        ([535], PermanentError),
    ],
)
def test_smtp_4xx_is_temporary_and_the_rest_final(codes: list[int], outcome: type[Exception]) -> None:
    with pytest.raises(outcome):
        n._smtp_codes(codes, "x")


def test_the_email_is_a_plain_text_summary(tmp_path: Path) -> None:
    msg = n.email_message(settings(tmp_path), ["a@example.org", "b@example.org"], EVENT)
    assert msg["Subject"] == "[lorebase] Handbook: pipeline completed with errors"
    assert msg["To"] == "a@example.org, b@example.org" and msg["From"] == "lorebase@localhost"
    text = msg.get_content()
    for line in (
        "Documents indexed: 3",
        "Documents failed: 1",
        "Duration: 42.0 s",
        EVENT["kb_url"],
        EVENT["pipeline_url"],
    ):
        assert line in text


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1/x", "loopback"),
        ("http://2130706433/x", "loopback"),
        ("http://localhost:8080/x", "loopback"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://192.168.1.10/", "private"),
        ("https://93.184.215.14/hook", None),
        ("http://no-such-host.invalid/x", None),  # unresolvable now: left to the send attempt
    ],
)
def test_webhook_targets_are_checked_like_crawl_targets(
    tmp_path: Path, url: str, refused: str | None
) -> None:
    problem = webhook_refusal(settings(tmp_path), url)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def test_private_targets_can_be_allowed_by_setting(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/x"
    assert webhook_refusal(settings(tmp_path, notify={"allow_private_networks": True}), url) is None
    assert webhook_refusal(settings(tmp_path, notify={"allowed_hosts": "127.0.0.0/8"}), url) is None
    assert webhook_refusal(settings(tmp_path, notify={"allowed_hosts": "10.0.0.0/8"}), url) is not None


def test_the_address_is_checked_again_at_send_time(tmp_path: Path) -> None:
    """Validation passed long ago (or the name resolved elsewhere then): the send is refused."""
    s = settings(tmp_path, notify={"webhook_secret": "k"})
    with pytest.raises(BlockedAddress):
        asyncio.run(n._post(s, "http://127.0.0.1:9/hook", b"{}", {}))
    with pytest.raises(BlockedAddress):
        asyncio.run(n._post(s, "http://localhost:9/hook", b"{}", {}))


def test_shape_errors_are_refused_when_the_config_is_parsed() -> None:
    ok = parse_config(
        {"notifications": {"webhook_url": " https://h.example/x ", "email_to": ["a@b.org", "a@b.org"]}}
    )
    assert ok.notifications.webhook_url == "https://h.example/x" and ok.notifications.email_to == ["a@b.org"]
    for bad in (
        {"webhook_url": "file:///etc/passwd"},
        {"webhook_url": "http://"},
        {"email_to": ["x"]},
        {"email_to": ["a@b.org, c@d.org"]},
        {"email_to": ["a@b.org\nBcc: e@f.org"]},
        {"sms": "1"},
    ):
        with pytest.raises(Exception, match="invalid knowledge base config"):
            parse_config({"notifications": bad})


def test_a_config_without_notifications_needs_nothing(tmp_path: Path) -> None:
    assert notification_problems(settings(tmp_path), {}) == []
    assert notification_problems(settings(tmp_path), parse_config({}).model_dump()) == []
