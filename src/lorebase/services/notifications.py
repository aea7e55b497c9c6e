"""Pipeline-end notifications: durable jobs that post a signed webhook or send an email.

``enqueue_pipeline_end`` runs inside the transaction that gives a pipeline its final state
(``services/settle.py``), so the notification commits with that state or not at all: a crash
after the commit still notifies (the job is a row), a crash before it notifies nothing. The
summary is taken in that same transaction and travels in the job's payload, so what is sent
is what was true when the pipeline ended, even if the KB is changed or deleted meanwhile.

Delivery is at-least-once (a job may run twice); ``X-Lorebase-Delivery`` (the job id) lets a
receiver drop duplicates. Retries use the queue's backoff (``jobs.*`` settings). The two job types
are declared in ``tasks/notify_webhook.py`` and ``tasks/notify_email.py``; their handlers are here.
See docs/notifications.md for the payload and how to verify a signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lorebase.crawl.guard import blocked_cause, guarded_client, precheck_url
from lorebase.db.models import Document, Job, KnowledgeBase, Pipeline
from lorebase.errors import PermanentError, TransientError
from lorebase.jobs.registry import TaskSpec
from lorebase.services.config import webhook_policy
from lorebase.tasks import notify_email, notify_webhook

if TYPE_CHECKING:
    from lorebase.jobs.context import JobContext
    from lorebase.runtime import Runtime
    from lorebase.settings import Settings

log = logging.getLogger("lorebase.notify")

EVENT = "pipeline.ended"
USER_AGENT = "lorebase-webhooks/1"


# -- enqueue (in settle's transaction) ---------------------------------------------------------


def enqueue_pipeline_end(s: Session, runtime: Runtime, p: Pipeline) -> None:
    """Queue one job per configured channel for the end of ``p``, in the caller's transaction.

    The dedupe key names this ending (``finished_at``), so one ending notifies once while a
    retried pipeline that ends again notifies again. The jobs carry no ``pipeline_id``: they
    belong to no pipeline's work, so they neither keep a retried pipeline from settling nor
    get cancelled or paused with it.
    """
    kb = s.get(KnowledgeBase, p.kb_id)
    if kb is None:
        return
    notes = (kb.config or {}).get("notifications") or {}
    channels: list[tuple[str, TaskSpec, dict[str, Any]]] = []
    if notes.get("webhook_url"):
        channels.append(("webhook", notify_webhook.SPEC, {"url": notes["webhook_url"]}))
    if notes.get("email_to"):
        channels.append(("email", notify_email.SPEC, {"to": list(notes["email_to"])}))
    if not channels:
        return
    summary = pipeline_summary(s, runtime.settings, kb, p)
    ending = (p.finished_at or p.updated_at).isoformat()
    for channel, spec, target in channels:
        key = f"notify:{channel}:{p.id}:{ending}"
        already = s.execute(select(Job.id).where(Job.kb_id == kb.id, Job.dedupe_key == key).limit(1)).scalar()
        if already is not None:  # this ending was notified (or is being) already
            continue
        spec.enqueue(
            s,
            runtime.queue,
            runtime.settings,
            workspace_id=p.workspace_id,
            kb_id=kb.id,
            payload={**target, "event": summary},
            dedupe_key=key,
        )


def pipeline_summary(s: Session, settings: Settings, kb: KnowledgeBase, p: Pipeline) -> dict[str, Any]:
    """The JSON body of a webhook and the facts of an email (docs/notifications.md)."""
    indexed = s.execute(
        select(func.count())
        .select_from(Document)
        .where(Document.pipeline_id == p.id, Document.status == "indexed")
    ).scalar_one()
    duration = None
    if p.started_at and p.finished_at:
        duration = round((p.finished_at - p.started_at).total_seconds(), 3)
    base = settings.resolved_public_url
    return {
        "event": EVENT,
        "kb_id": kb.id,
        "kb_name": kb.name,
        "pipeline_id": p.id,
        "kind": p.kind,
        "status": p.status,
        "message": p.message,
        "error": p.error,
        "documents_total": p.documents_total,
        "documents_indexed": indexed,
        "documents_failed": p.documents_failed,
        "documents_skipped": p.documents_skipped,
        "chunks_indexed": p.chunks_indexed,
        "started_at": p.started_at.isoformat() if p.started_at else None,
        "finished_at": p.finished_at.isoformat() if p.finished_at else None,
        "duration_seconds": duration,
        "kb_url": f"{base}/kbs/{kb.id}",
        "pipeline_url": f"{base}/api/v1/pipelines/{p.id}",
    }


# -- webhooks ------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>.<body>"): the timestamp is signed
    too, so a captured request cannot be replayed later under a fresh timestamp."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def webhook_request(secret: str, delivery_id: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers of one delivery attempt (signed at send time)."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Lorebase-Event": EVENT,
        "X-Lorebase-Delivery": delivery_id,
        "X-Lorebase-Timestamp": str(timestamp),
        "X-Lorebase-Signature": sign(secret, timestamp, body),
    }
    return body, headers


class SendWebhook:
    """Job handler: POST the summary; 2xx done, 408/429/5xx and network errors retried."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        settings = ctx.runtime.settings
        secret = settings.notify.webhook_secret
        if secret is None:
            raise PermanentError("LOREBASE_NOTIFY__WEBHOOK_SECRET is not set: webhooks are not sent unsigned")
        url = str(ctx.job.payload["url"])
        body, headers = webhook_request(secret.get_secret_value(), ctx.job.id, ctx.job.payload["event"])
        response = asyncio.run(_post(settings, url, body, headers))
        _judge(url, response)

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        log.warning(
            "webhook for pipeline %s gave up: %s", ctx.job.payload["event"].get("pipeline_id"), message
        )


async def _post(settings: Settings, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """One POST through the crawler's SSRF guard: the address is checked again now, on the
    socket actually connected (the host may resolve elsewhere than at validation)."""
    policy = webhook_policy(settings)
    precheck_url(url, policy)
    timeout = settings.notify.timeout_seconds
    try:
        async with guarded_client(
            policy, user_agent=USER_AGENT, timeout=timeout, max_connections=1
        ) as client:
            return await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        if (blocked := blocked_cause(exc)) is not None:
            raise blocked from exc
        raise TransientError(f"webhook {url}: {type(exc).__name__}: {exc}") from exc


def _judge(url: str, response: httpx.Response) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    if code in (408, 429) or code >= 500:
        raise TransientError(f"webhook {url} answered {code}", retry_after=_retry_after(response))
    # 3xx included: the guard's client does not follow redirects; configure the final URL
    raise PermanentError(f"webhook {url} answered {code}; not retried")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


# -- email ---------------------------------------------------------------------------------------


def email_message(settings: Settings, to: list[str], event: dict[str, Any]) -> EmailMessage:
    """A plain-text summary; the subject says the outcome so an inbox can be scanned."""
    msg = EmailMessage()
    status = str(event["status"]).replace("_", " ")
    msg["Subject"] = f"[lorebase] {event['kb_name']}: pipeline {status}"
    msg["From"] = settings.smtp.from_address
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="lorebase")
    duration = event.get("duration_seconds")
    lines = [
        f"Knowledge base: {event['kb_name']} ({event['kb_id']})",
        f"Pipeline: {event['pipeline_id']} ({event['kind']})",
        f"Status: {status}",
        f"Documents indexed: {event['documents_indexed']}",
        f"Documents failed: {event['documents_failed']}",
        f"Documents unchanged: {event['documents_skipped']}",
        f"Chunks indexed: {event['chunks_indexed']}",
        f"Duration: {duration:.1f} s" if duration is not None else "Duration: unknown",
    ]
    if event.get("error"):
        lines.append(f"Error: {event['error']}")
    if event.get("message"):
        lines += ["", str(event["message"])]
    lines += ["", f"Knowledge base: {event['kb_url']}", f"Pipeline (API): {event['pipeline_url']}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class SendEmail:
    """Job handler: send the summary over SMTP; connection trouble and 4xx replies retried."""

    def run(self, ctx: JobContext[Runtime]) -> None:
        settings = ctx.runtime.settings
        if not settings.smtp.host:
            raise PermanentError("email is off on this server (LOREBASE_SMTP__HOST is not set)")
        to = [str(a) for a in ctx.job.payload["to"]]
        send_email(settings, email_message(settings, to, ctx.job.payload["event"]))

    def on_failure(self, ctx: JobContext[Runtime], session: Session, message: str, kind: str) -> None:
        log.warning("email for pipeline %s gave up: %s", ctx.job.payload["event"].get("pipeline_id"), message)


def send_email(settings: Settings, msg: EmailMessage) -> None:
    cfg = settings.smtp
    assert cfg.host is not None
    try:
        with smtplib.SMTP(cfg.host, cfg.port, timeout=settings.notify.timeout_seconds) as smtp:
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.username:
                password = cfg.password.get_secret_value() if cfg.password else ""
                smtp.login(cfg.username, password)
            refused = smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        _smtp_codes(
            [code for code, _ in exc.recipients.values()], f"all recipients refused: {exc.recipients}"
        )
        return
    except smtplib.SMTPResponseException as exc:  # auth, sender refused, data refused, ...
        _smtp_codes([exc.smtp_code], f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
    except (smtplib.SMTPException, OSError) as exc:  # connection refused, reset, timeout, TLS
        raise TransientError(f"SMTP {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}") from exc
    if refused:  # some recipients got it: retrying would send them a second copy
        log.warning("email sent, but these recipients were refused: %s", refused)


def _smtp_codes(codes: list[int], message: str) -> NoReturn:
    """4xx replies are temporary by SMTP's own definition; anything else is final."""
    if codes and all(400 <= c < 500 for c in codes):
        raise TransientError(message)
    raise PermanentError(message)
