"""Pipeline-end notifications through real parts: a webhook receiver and an SMTP server on
loopback, a real pipeline ingesting text records through the API.

Settings are given as ``LOREBASE_*`` variables (monkeypatch), so that a ``lorebase worker``
process of a Celery/RQ run reads the same ones as the app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from support.cluster import free_port

SECRET = "test-webhook-secret"
RECORDS = [
    {"external_id": "owl", "title": "Owls", "text": "Barn owls hunt at night, finding mice by sound alone."},
    {"external_id": "fern", "title": "Ferns", "text": "Ferns reproduce with spores rather than seeds."},
]


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint: records every request and answers the next scripted status."""

    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    def wait_for(self, n: int, timeout: float = 30) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.deliveries) >= n, f"got {len(self.deliveries)} deliveries, expected {n}"
        return self.deliveries


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.deliveries.append(Delivery({k.lower(): v for k, v in self.headers.items()}, body))
            status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/lorebase"
    yield rec
    server.shutdown()
    server.server_close()


def verify(delivery: Delivery, secret: str) -> dict[str, Any]:
    """What a receiver does (docs/notifications.md): recompute the HMAC over
    "<timestamp>.<raw body>", compare in constant time, check the timestamp is fresh."""
    timestamp = delivery.headers["x-lorebase-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + delivery.body, hashlib.sha256)
    signature = delivery.headers["x-lorebase-signature"]
    assert hmac.compare_digest(signature, "sha256=" + expected.hexdigest())
    assert abs(time.time() - int(timestamp)) < 300
    event: dict[str, Any] = json.loads(delivery.body)
    return event


def _app_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(f"LOREBASE_{name}", value)
    return make_settings(tmp_path / "data")


def _ingest(client: TestClient, headers: dict[str, str], notifications: dict[str, Any]) -> dict[str, Any]:
    created = finalize_draft(
        client, headers, records=RECORDS, name="notified kb", config={"notifications": notifications}
    )
    state = wait_pipeline(client, headers, created["pipeline_id"])
    assert state["status"] == "completed", state
    return created


def test_a_finished_pipeline_posts_a_signed_summary_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    settings = _app_settings(
        tmp_path,
        monkeypatch,
        NOTIFY__WEBHOOK_SECRET=SECRET,
        NOTIFY__ALLOW_PRIVATE_NETWORKS="true",
        PUBLIC_URL="https://kb.example.org/",
    )
    with running_app(settings) as client:
        headers = key_headers(client)
        created = _ingest(client, headers, {"webhook_url": receiver.url})
        [delivery] = receiver.wait_for(1)
        event = verify(delivery, SECRET)
        kb_id, pipeline_id = created["kb_id"], created["pipeline_id"]
        assert delivery.headers["x-lorebase-event"] == "pipeline.ended"
        assert delivery.headers["content-type"] == "application/json"
        assert event["event"] == "pipeline.ended"
        assert (event["kb_id"], event["kb_name"], event["pipeline_id"]) == (kb_id, "notified kb", pipeline_id)
        assert event["status"] == "completed"
        assert (event["documents_indexed"], event["documents_failed"]) == (2, 0)
        assert event["duration_seconds"] is not None and event["duration_seconds"] >= 0
        assert event["kb_url"] == f"https://kb.example.org/kbs/{kb_id}"
        assert event["pipeline_url"] == f"https://kb.example.org/api/v1/pipelines/{pipeline_id}"
        jobs = client.get("/api/v1/jobs", params={"kb_id": kb_id}, headers=headers).json()["items"]
        [job] = [j for j in jobs if j["type"] == "notify_webhook"]
        assert delivery.headers["x-lorebase-delivery"] == job["id"]
        time.sleep(1.0)  # a few more settle/sweep passes: one ending is notified once
        assert len(receiver.deliveries) == 1
        with pytest.raises(AssertionError):
            verify(delivery, "not the secret")  # a forged signature is told apart


def test_a_failing_receiver_gets_the_same_delivery_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    receiver.statuses = [500, 429, 200]
    settings = _app_settings(
        tmp_path, monkeypatch, NOTIFY__WEBHOOK_SECRET=SECRET, NOTIFY__ALLOW_PRIVATE_NETWORKS="true"
    )
    with running_app(settings) as client:
        headers = key_headers(client)
        _ingest(client, headers, {"webhook_url": receiver.url})
        deliveries = receiver.wait_for(3)
        events = [verify(d, SECRET) for d in deliveries]  # each attempt is signed afresh
        assert len({d.headers["x-lorebase-delivery"] for d in deliveries}) == 1
        assert all(e == events[0] for e in events)
        time.sleep(1.0)
        assert len(receiver.deliveries) == 3  # 200 ends it


def test_a_receiver_that_refuses_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    receiver.statuses = [410]
    settings = _app_settings(
        tmp_path, monkeypatch, NOTIFY__WEBHOOK_SECRET=SECRET, NOTIFY__ALLOW_PRIVATE_NETWORKS="true"
    )
    with running_app(settings) as client:
        headers = key_headers(client)
        created = _ingest(client, headers, {"webhook_url": receiver.url})
        receiver.wait_for(1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = client.get("/api/v1/jobs", params={"kb_id": created["kb_id"]}, headers=headers).json()
            [job] = [j for j in jobs["items"] if j["type"] == "notify_webhook"]
            if job["status"] == "failed":
                break
            time.sleep(0.1)
        assert job["status"] == "failed" and "410" in job["last_error"], job
        assert len(receiver.deliveries) == 1


@dataclass
class Mailbox:
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def test_a_finished_pipeline_emails_its_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    settings = _app_settings(
        tmp_path,
        monkeypatch,
        SMTP__HOST="127.0.0.1",
        SMTP__PORT=str(port),
        SMTP__STARTTLS="false",
        SMTP__FROM_ADDRESS="kb-bot@example.org",
    )
    with running_app(settings) as client:
        headers = key_headers(client)
        to = ["ada@example.org", "grace@example.org"]
        created = _ingest(client, headers, {"email_to": to})
        deadline = time.monotonic() + 30
        while not box.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        [(sender, recipients, msg)] = box.messages
        assert sender == "kb-bot@example.org" and sorted(recipients) == to
        assert msg["Subject"] == "[lorebase] notified kb: pipeline completed"
        body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
        assert f"Pipeline: {created['pipeline_id']}" in body
        assert "Documents indexed: 2" in body and "Documents failed: 0" in body
        assert f"http://127.0.0.1:8000/kbs/{created['kb_id']}" in body
        assert f"/api/v1/pipelines/{created['pipeline_id']}" in body


def _validate(client: TestClient, headers: dict[str, str], notifications: dict[str, Any]) -> dict[str, Any]:
    r = client.post(
        "/api/v1/kb-drafts", json={"name": "n", "config": {"notifications": notifications}}, headers=headers
    )
    assert r.status_code == 201, r.text
    draft_id = r.json()["id"]
    body = {"type": "text", "documents": RECORDS}
    assert client.post(f"/api/v1/kb-drafts/{draft_id}/sources", json=body, headers=headers).status_code == 201
    report: dict[str, Any] = client.post(f"/api/v1/kb-drafts/{draft_id}/validate", headers=headers).json()
    report["draft_id"] = draft_id
    return report


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]/x", "http://10.1.2.3/"]
)
def test_a_webhook_to_a_private_address_is_refused_at_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    settings = _app_settings(tmp_path, monkeypatch, NOTIFY__WEBHOOK_SECRET=SECRET)
    with running_app(settings, workers=0) as client:
        headers = key_headers(client)
        report = _validate(client, headers, {"webhook_url": url})
        assert not report["is_valid"]
        [error] = report["errors"]
        assert error["field"] == "config.notifications.webhook_url"
        assert "refused webhook target" in error["message"]
        assert "LOREBASE_NOTIFY__ALLOW_PRIVATE_NETWORKS" in error["message"]
        r = client.post(f"/api/v1/kb-drafts/{report['draft_id']}/finalize", headers=headers)
        assert r.status_code == 422 and r.json()["error"]["code"] == "draft_invalid"


def test_notifications_the_server_cannot_send_are_refused_at_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _app_settings(tmp_path, monkeypatch, NOTIFY__ALLOW_PRIVATE_NETWORKS="true")
    with running_app(settings, workers=0) as client:
        headers = key_headers(client)
        report = _validate(client, headers, {"webhook_url": "http://127.0.0.1:9/", "email_to": ["a@b.org"]})
        messages = {e["field"]: e["message"] for e in report["errors"]}
        assert "LOREBASE_NOTIFY__WEBHOOK_SECRET" in messages["config.notifications.webhook_url"]
        assert "LOREBASE_SMTP__HOST" in messages["config.notifications.email_to"]
        for bad in ({"webhook_url": "ftp://example.org/x"}, {"email_to": ["a@b.org\r\nBcc: x@y.org"]}):
            r = client.post(
                "/api/v1/kb-drafts", json={"name": "n", "config": {"notifications": bad}}, headers=headers
            )
            assert r.status_code == 422, r.text
