"""The ``openai:`` embedder's parts that need no model: how answers become errors (through a
real loopback server), requests cut by count and tokens, ``Retry-After`` read both ways, the
API key sent to the server's endpoint only, and the in-process budget making callers wait."""

from __future__ import annotations

import email.utils
import threading
import time
from pathlib import Path

import pytest
from limits.storage import MemoryStorage

from conftest import make_settings
from lorebase.adapters.embedders import openai_endpoint
from lorebase.adapters.embedders.budget import Budget
from lorebase.adapters.embedders.openai import Endpoint, OpenAIEmbedder, retry_after
from lorebase.errors import InvalidInput, PermanentError, TransientError
from lorebase.jobs.retry import Backoff, after_error, classify
from support.openai_proxy import OpenAIProxy


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(" 1.5 ") == 1.5
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after(when) or 0) <= 30
    assert retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after(None) is None and retry_after("soon") is None


def test_requests_are_cut_by_count_and_by_tokens() -> None:
    e = OpenAIEmbedder("m", Endpoint("http://127.0.0.1:9", batch_size=3, batch_tokens=100))
    assert e._batches([10, 10, 10, 10]) == [[0, 1, 2], [3]]
    assert e._batches([60, 30, 20, 500, 5]) == [[0, 1], [2], [3], [4]]  # a long text goes alone


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (429, TransientError, "Rate limit reached"),
        (500, TransientError, "upstream exploded"),
        (503, TransientError, "loading"),
        (400, PermanentError, "input too long"),
        (401, PermanentError, "Incorrect API key"),
        (403, PermanentError, "not allowed"),
        (404, PermanentError, "model not found"),
    ],
)
def test_an_answer_becomes_a_transient_or_a_permanent_error_with_the_provider_s_words(
    status: int, kind: type[Exception], message: str
) -> None:
    proxy = OpenAIProxy("http://127.0.0.1:9")  # nothing upstream: every request meets a fault
    with proxy as base_url:
        proxy.fail(status, message, retry_after="3")
        with pytest.raises(kind) as caught:
            OpenAIEmbedder("m", Endpoint(base_url)).embed(["hello"])
    text = str(caught.value)
    assert message in text and str(status) in text and "Traceback" not in text
    failure = classify(caught.value)
    assert failure.kind == ("transient" if kind is TransientError else "permanent")
    if kind is TransientError:
        # the one retry module waits at least what the server asked
        assert failure.retry_after == 3.0
        verdict = after_error(
            attempts=1,
            max_attempts=5,
            progressed=False,
            backoff=Backoff(0.1, 10),
            retry_after=failure.retry_after,
        )
        assert verdict.status == "pending" and verdict.delay >= 3.0


def test_an_unreachable_endpoint_is_transient() -> None:
    with pytest.raises(TransientError, match="unreachable"):
        OpenAIEmbedder("m", Endpoint("http://127.0.0.1:9", timeout=2)).embed(["hello"])


def test_the_api_key_goes_to_the_server_s_endpoint_only(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        openai_base_url="https://api.example.com/v1/",
        openai_api_key="sk-x",
        openai_allowed_base_urls="https://elsewhere.example/v1/, http://gpu-box:8080/v1",
    )
    model = {"model": "openai:text-embedding-3-small"}
    assert openai_endpoint(settings, model).api_key == "sk-x"
    assert openai_endpoint(settings, {**model, "base_url": "https://api.example.com/v1"}).api_key == "sk-x"
    # a KB naming its own endpoint (one the operator allows) must not receive the deployment's key
    assert openai_endpoint(settings, {**model, "base_url": "https://elsewhere.example/v1"}).api_key is None
    assert openai_endpoint(settings, {**model, "base_url": "http://gpu-box:8080/v1/"}).api_key is None
    # any other address a KB writer names is refused: the workers would POST chunk texts to it
    for hostile in (
        "http://127.0.0.1:6379/v1",
        "http://169.254.169.254/latest",
        "https://elsewhere.example/v2",
    ):
        with pytest.raises(InvalidInput, match="LOREBASE_OPENAI_ALLOWED_BASE_URLS"):
            openai_endpoint(settings, {**model, "base_url": hostile})
    with pytest.raises(InvalidInput, match="LOREBASE_OPENAI_BASE_URL"):
        openai_endpoint(make_settings(tmp_path), model)


def test_the_budget_makes_callers_wait_rather_than_fail() -> None:
    budget = Budget(MemoryStorage(), rpm=2, tpm=None, window_seconds=1)  # 2 per (1 + margin) s
    sent: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        budget.acquire("http://e", 10)
        with lock:
            sent.append(time.monotonic())

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    sent.sort()
    assert len(sent) == 4
    assert sent[2] - sent[0] >= 1.0  # the third waited for the first to leave the window
    # another endpoint has a budget of its own
    start = time.monotonic()
    budget.acquire("http://other", 10)
    assert time.monotonic() - start < 0.5


def test_the_token_budget_counts_tokens() -> None:
    budget = Budget(MemoryStorage(), rpm=None, tpm=100, window_seconds=1)
    start = time.monotonic()
    budget.acquire("http://e", 80)
    assert time.monotonic() - start < 0.5
    budget.acquire("http://e", 80)  # 160 > 100 in the window: waits
    assert time.monotonic() - start >= 0.4


def test_budgets_in_redis_are_shared_by_separate_clients_as_processes_would_share_them() -> None:
    import uuid

    from limits.storage import RedisStorage

    from support.cluster import REDIS_URL, redis_available

    if not redis_available():
        pytest.skip("Redis is not reachable")
    prefix = f"lbt{uuid.uuid4().hex[:10]}:embed-budget"
    a, b = (
        Budget(RedisStorage(REDIS_URL, key_prefix=prefix), rpm=2, tpm=1000, window_seconds=1)
        for _ in range(2)
    )
    start = time.monotonic()
    a.acquire("http://e", 10)
    b.acquire("http://e", 10)
    assert time.monotonic() - start < 0.5
    a.acquire("http://e", 10)  # the third request of the window, whoever sends it, waits
    assert time.monotonic() - start >= 1.0
    tokens = [Budget(RedisStorage(REDIS_URL, key_prefix=prefix + "t"), rpm=None, tpm=100, window_seconds=1)]
    tokens.append(
        Budget(RedisStorage(REDIS_URL, key_prefix=prefix + "t"), rpm=None, tpm=100, window_seconds=1)
    )
    start = time.monotonic()
    tokens[0].acquire("http://e", 80)
    tokens[1].acquire("http://e", 80)  # 160 > 100 across both clients: waits
    assert time.monotonic() - start >= 0.4


def test_a_named_tokenizer_counts_the_tokens_and_a_missing_one_is_refused_at_start(tmp_path: Path) -> None:
    from lorebase.adapters.embedders import load_tokenizer_ref, tokenizer_ref
    from lorebase.adapters.embedders.local import model_dir
    from lorebase.runtime import check_supported

    named = model_dir("all-MiniLM-L6-v2") / "tokenizer.json"
    e = OpenAIEmbedder("m", Endpoint("http://127.0.0.1:9"), tokenizer_path=named)
    assert len(e.tokenizer().encode("The cat sat on the mat.", add_special_tokens=False).ids) == 7
    ref = tokenizer_ref("openai:m", named)
    assert ref == f"file:{named}" and load_tokenizer_ref(ref).to_str() == e.tokenizer().to_str()
    assert tokenizer_ref("openai:m", None) == "local:all-MiniLM-L6-v2"  # the documented approximation
    with pytest.raises(InvalidInput, match="LOREBASE_OPENAI_TOKENIZER"):
        check_supported(make_settings(tmp_path, openai_tokenizer=tmp_path / "missing.json"))


def test_a_config_change_of_model_or_endpoint_forgets_the_recorded_dimension() -> None:
    from lorebase.services.versions import _forget_dimensions

    current = {"embedding": {"model": "openai:a", "dimensions": 384}}
    other_model = {"embedding": {"model": "openai:b", "dimensions": 384}}
    assert (
        "dimensions"
        not in _forget_dimensions(current, other_model, {"embedding": {"model": "openai:b"}})["embedding"]
    )
    stated = {"embedding": {"model": "openai:b", "dimensions": 768}}
    assert _forget_dimensions(current, stated, stated)["embedding"]["dimensions"] == 768
    moved = {"embedding": {"model": "openai:a", "base_url": "http://gpu:8080/v1", "dimensions": 384}}
    assert (
        "dimensions"
        not in _forget_dimensions(current, moved, {"embedding": {"base_url": "http://gpu:8080/v1"}})[
            "embedding"
        ]
    )
    assert _forget_dimensions(current, current, {"chunking": {"chunk_size": 128}}) == current


def test_credentials_in_a_base_url_are_never_shown() -> None:
    from lorebase.adapters.embedders.openai import model_id_of, shown_url

    assert shown_url("https://user:secret@gpu.example:8443/v1/") == "https://gpu.example:8443/v1"
    assert shown_url("http://127.0.0.1:7997") == "http://127.0.0.1:7997"
    assert "secret" not in model_id_of("m", "https://user:secret@gpu.example/v1")
