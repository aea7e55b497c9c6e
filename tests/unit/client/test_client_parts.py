"""The client's pure parts: the retry decision, Retry-After, the SSE decoder, error mapping, and
that importing the client (and both retrievers) loads none of the server."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from lorebase import errors as server_errors
from lorebase.client import errors
from lorebase.client.retry import RetryPolicy, retry_after
from lorebase.client.sse import SseDecoder


@pytest.mark.parametrize(
    ("safety", "status", "error", "expected"),
    [
        ("safe", 503, None, True),
        ("safe", 429, None, True),
        ("safe", 404, None, False),
        ("keyed", 500, None, True),
        ("keyed", None, httpx.ReadError("reset"), True),
        ("once", 500, None, False),  # creating a key: a 500 may have created it
        ("once", 429, None, True),  # refused before it ran
        ("once", None, httpx.ReadError("reset"), False),
        ("once", None, httpx.ConnectError("refused"), True),  # nothing was sent
    ],
)
def test_what_is_retried(safety: str, status: int | None, error: Exception | None, expected: bool) -> None:
    assert RetryPolicy().should_retry(safety, 1, status=status, error=error) is expected  # type: ignore[arg-type]


def test_a_keyed_call_still_running_on_the_server_is_asked_again() -> None:
    policy = RetryPolicy()
    assert policy.should_retry("keyed", 1, status=409, code="idempotency_key_in_use")
    assert not policy.should_retry("keyed", 1, status=409, code="conflict")
    assert not policy.should_retry("safe", 1, status=409, code="idempotency_key_in_use")


def test_attempts_are_capped_and_waits_grow_up_to_the_cap_and_honour_retry_after() -> None:
    policy = RetryPolicy(attempts=3, backoff=1.0, max_backoff=4.0, max_retry_after=30)
    assert policy.should_retry("safe", 2, status=503) and not policy.should_retry("safe", 3, status=503)
    assert 1.0 <= policy.delay(1) <= 1.5 and 4.0 <= policy.delay(10) <= 6.0
    assert policy.delay(1, retry_after=7) == 7
    assert policy.waits_for(30) and not policy.waits_for(31)


def test_retry_after_seconds_or_http_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after(answer("12")) == 12.0
    assert retry_after(answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past: at once
    assert retry_after(answer("soon")) is None


def test_sse_decoder_reads_ids_events_multiline_data_and_skips_comments() -> None:
    decoder = SseDecoder()
    lines = ["retry: 1000", "", ": keep-alive", "", "id: 7", "event: pipeline", 'data: {"a":', "data: 1}", ""]
    events = [e for e in map(decoder.feed, lines) if e is not None]
    assert [(e.id, e.event, e.data) for e in events] == [(7, "pipeline", {"a": 1})]
    assert decoder.retry == 1.0


def test_error_answers_map_to_classes_with_the_api_code() -> None:
    body = {
        "error": {"code": "draft_invalid", "message": "the draft is not valid", "details": [{"field": "x"}]}
    }
    exc = errors.error_for(422, body)
    assert isinstance(exc, errors.ValidationFailed) and isinstance(exc, server_errors.LorebaseError)
    assert (exc.code, exc.status, exc.details) == ("draft_invalid", 422, [{"field": "x"}])
    assert isinstance(errors.error_for(502, "<html>bad gateway</html>"), errors.ServerError)
    limited = errors.error_for(429, {}, retry_after=3)
    assert (
        isinstance(limited, errors.RateLimited)
        and limited.retry_after == 3
        and limited.code == "rate_limited"
    )


def test_importing_the_client_and_retrievers_loads_none_of_the_server() -> None:
    probe = (
        "import sys, lorebase.client, lorebase.integrations.common\n"
        "heavy = ('torch', 'sqlalchemy', 'fastapi', 'starlette', 'sentence_transformers', 'lorebase.services',"
        " 'lorebase.db', 'lorebase.runtime', 'lorebase.app', 'langchain_core', 'llama_index')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
