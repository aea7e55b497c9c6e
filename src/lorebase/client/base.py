"""What the sync and async clients share: where to connect and with which key, how one attempt
of a call is sent and read, and where an event stream resumes. Each client adds only its own
way of waiting and sending."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from lorebase import __version__
from lorebase.client.calls import Call
from lorebase.client.errors import ConnectionFailed, LorebaseError, ValidationFailed, error_for
from lorebase.client.models import Event
from lorebase.client.retry import RetryPolicy, retry_after
from lorebase.client.sse import SseDecoder

SERVER_URL_ENV = "LOREBASE_SERVER_URL"
API_KEY_ENV = "LOREBASE_API_KEY"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: a stream quiet for this long is broken (the server sends a keep-alive every 15 s)
STREAM_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class Config:
    base_url: str
    api_key: str | None = field(repr=False)  # never in a log line or a traceback's locals
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def resolve(
        cls, base_url: str | None, api_key: str | None, timeout: float, retry: RetryPolicy | None
    ) -> Config:
        """Arguments first, then ``LOREBASE_SERVER_URL`` / ``LOREBASE_API_KEY``."""
        url = (base_url or os.environ.get(SERVER_URL_ENV) or "").strip()
        if not url:
            raise LorebaseError(f"no server: pass base_url or set {SERVER_URL_ENV}", code="no_server")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LorebaseError(f"{url!r} is not an http(s) URL of a lorebase server", code="no_server")
        if parts.username or parts.password:
            raise LorebaseError("put the API key in api_key, not in the server URL", code="no_server")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        return cls(url.rstrip("/"), key, timeout, retry or RetryPolicy())

    def headers(self) -> dict[str, str]:
        out = {"User-Agent": f"lorebase-client/{__version__}", "Accept": "application/json"}
        if self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out

    def httpx_options(self) -> dict[str, Any]:
        # redirects are never followed: a Bearer key must not travel to wherever a 3xx points
        return {
            "base_url": self.base_url,
            "headers": self.headers(),
            "timeout": httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            "follow_redirects": False,
        }


def idempotency_headers(call: Call[Any]) -> dict[str, str]:
    """A keyed call gets one key for all its attempts: the server runs it once."""
    return {IDEMPOTENCY_HEADER: f"lorebase-client-{uuid.uuid4().hex}"} if call.safety == "keyed" else {}


@contextlib.contextmanager
def request_args(call: Call[Any], headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The keyword arguments of one attempt. Files are opened afresh for each attempt and streamed
    by httpx in chunks from disk (with a Content-Length from their size), never read whole."""
    args: dict[str, Any] = {"method": call.method, "url": call.path, "headers": headers}
    if call.params:
        args["params"] = dict(call.params)
    if call.json is not None:
        args["json"] = call.json
    with contextlib.ExitStack() as stack:
        if call.files:
            opened: list[tuple[str, tuple[str, IO[bytes]]]] = []
            for file in call.files:
                opened.append(("files", (file.name, stack.enter_context(open_upload(file)))))
            args["files"] = opened
            if call.form:
                args["data"] = {k: list(v) for k, v in call.form.items()}
        yield args


def open_upload(file: Path) -> IO[bytes]:
    if not file.is_file():
        raise ValidationFailed(f"{file}: not a file", details={"path": str(file)})
    return file.open("rb")


@dataclass
class Outcome:
    """What one attempt came to: a value, or an error and whether (and when) to try again."""

    value: Any = None
    error: LorebaseError | None = None
    retry: bool = False
    wait: float = 0.0


def read_answer(
    call: Call[Any], response: httpx.Response, attempt: int, policy: RetryPolicy, *, lost_answer: bool
) -> Outcome:
    """``lost_answer``: an earlier attempt may have run without its answer reaching us."""
    status = response.status_code
    if status < 300:
        return Outcome(value=call.parse(response))
    if call.method == "DELETE" and status == 404 and lost_answer:
        return Outcome(value=None)  # the lost answer was the delete's: it is done
    try:
        payload = response.json()
    except ValueError:
        payload = None
    wait_hint = retry_after(response)
    error = error_for(status, payload, retry_after=wait_hint)
    if policy.should_retry(call.safety, attempt, status=status, code=error.code) and policy.waits_for(
        wait_hint
    ):
        return Outcome(error=error, retry=True, wait=policy.delay(attempt, wait_hint))
    return Outcome(error=error)


def transport_failure(
    call: Call[Any], exc: httpx.TransportError, attempt: int, policy: RetryPolicy, base_url: str
) -> Outcome:
    error = ConnectionFailed(f"{call.method} {base_url}{call.path}: {describe(exc)}")
    if policy.should_retry(call.safety, attempt, error=exc):
        return Outcome(error=error, retry=True, wait=policy.delay(attempt))
    return Outcome(error=error)


def describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({text})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"the connection broke ({text})"


@dataclass
class EventCursor:
    """Where a followed event stream is: the last event id seen, sent as ``Last-Event-ID`` on
    every reconnection, so the server resumes after it (and an event is never seen twice)."""

    seen: int = 0
    decoder: SseDecoder = field(default_factory=SseDecoder)
    #: reconnections in a row that brought no event
    failures: int = 0

    def headers(self) -> dict[str, str]:
        out = {"Accept": "text/event-stream"}
        if self.seen:
            out["Last-Event-ID"] = str(self.seen)
        return out

    def feed(self, line: str) -> Event | None:
        event = self.decoder.feed(line)
        if event is None or event.id <= self.seen:
            return None
        self.seen, self.failures = event.id, 0
        return event

    def reconnect(self) -> None:
        self.decoder = SseDecoder(retry=self.decoder.retry)  # a half-received event is dropped

    def delay(self, policy: RetryPolicy) -> float:
        advised = self.decoder.retry if self.decoder.retry is not None else 1.0
        return min(advised, policy.delay(max(1, self.failures)))


def raise_refusal(response: httpx.Response, cursor: EventCursor, policy: RetryPolicy) -> None:
    """An event stream answered with an error: raised, unless it is worth reconnecting (5xx, 429)."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not policy.should_retry("safe", cursor.failures + 1, status=response.status_code):
        raise error_for(response.status_code, payload, retry_after=retry_after(response))


def stream_timeout(config: Config) -> httpx.Timeout:
    return httpx.Timeout(config.timeout, connect=min(10.0, config.timeout), read=STREAM_READ_TIMEOUT)
