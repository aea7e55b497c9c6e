"""``jobs/retry.py``: the one place retry is decided, pinned case by case.

The queue applies these verdicts to rows (``tests/integration/jobs/test_job_queue.py``); the
fault suite shows them under real kills (``tests/faults``)."""

from __future__ import annotations

import random
import signal

import pytest
from sqlalchemy.exc import OperationalError

from lorebase.errors import Interrupted, LeaseLost, PermanentError, TransientError
from lorebase.jobs import retry
from lorebase.jobs.retry import Backoff, Verdict, after_error, after_loss


def test_errors_are_classified_by_what_retrying_can_do() -> None:
    assert retry.classify(PermanentError("corrupt PDF")) == retry.Failure("permanent", "corrupt PDF")
    transient = retry.classify(TransientError("HTTP 503", retry_after=7.0))
    assert (transient.kind, transient.message, transient.retry_after) == ("transient", "HTTP 503", 7.0)
    assert retry.classify(LeaseLost("taken over")).kind == "lease_lost"
    paused = retry.classify(Interrupted("paused"))
    assert (paused.kind, paused.reason) == ("interrupted", "paused")
    locked = retry.classify(OperationalError("UPDATE jobs", {}, Exception("database is locked")))
    assert (locked.kind, locked.unexpected) == ("transient", False)
    assert "database is locked" in locked.message
    bug = retry.classify(KeyError("document_id"))
    assert (bug.kind, bug.unexpected, bug.message) == ("transient", True, "KeyError: 'document_id'")


def test_a_message_is_one_readable_line_of_bounded_length() -> None:
    assert retry.describe(ValueError()) == "ValueError"
    long = retry.describe(ValueError("x" * 5000))
    assert len(long) == retry.MAX_MESSAGE_CHARS + 1 and long.endswith("…")


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "progressed", "expected"),
    [
        (1, 3, False, Verdict("pending")),  # counted, retried at once
        (3, 3, False, Verdict("dead")),  # out of attempts without moving: the dead letter
        (3, 3, True, Verdict("pending", attempts=0)),  # moved on: a fresh count, never dead
        (9, 3, True, Verdict("pending", attempts=0)),
    ],
)
def test_a_lost_worker_counts_only_when_its_attempt_saved_nothing(
    attempts: int, max_attempts: int, progressed: bool, expected: Verdict
) -> None:
    assert after_loss(attempts=attempts, max_attempts=max_attempts, progressed=progressed) == expected


def test_a_transient_error_backs_off_and_counts_only_without_progress_which_starts_afresh() -> None:
    backoff = Backoff(base=2.0, cap=300.0)
    counted = after_error(attempts=2, max_attempts=5, progressed=False, backoff=backoff)
    assert (counted.status, counted.attempts) == ("pending", None)
    assert 2.0 <= counted.delay <= 4.0  # attempt 2: ceiling 4 s, equal jitter
    fresh = after_error(attempts=5, max_attempts=5, progressed=True, backoff=backoff)
    assert (fresh.status, fresh.attempts) == ("pending", 0)
    assert 1.0 <= fresh.delay <= 2.0  # the first backoff again
    assert after_error(attempts=5, max_attempts=5, progressed=False, backoff=backoff) == Verdict("dead")


def test_backoff_has_equal_jitter_a_cap_and_honours_a_longer_retry_after() -> None:
    rng = random.getstate()
    random.seed(3)
    try:
        backoff = Backoff(base=2.0, cap=60.0, retry_after_cap=300.0)
        for attempts in range(1, 12):
            ceiling = min(60.0, 2.0 * 2 ** (attempts - 1))
            delays = [backoff.delay(attempts) for _ in range(50)]
            assert all(ceiling / 2 <= d <= ceiling for d in delays), attempts
        assert backoff.delay(1, retry_after=120.0) == 120.0  # the server's word, when longer
        assert backoff.delay(1, retry_after=9999.0) == 300.0  # capped
        assert backoff.delay(6, retry_after=0.5) >= 30.0  # shorter: the backoff stands
        assert Backoff(base=1.0, cap=10.0).delay(1, retry_after=50.0) == 10.0  # no separate cap
    finally:
        random.setstate(rng)


def test_a_page_retries_until_its_attempts_are_spent() -> None:
    assert retry.page_retry(3, 3, None) is None
    delay = retry.page_retry(2, 3, None)
    assert delay is not None and 2.0 <= delay <= 4.0
    assert retry.page_retry(1, 3, retry_after=30.0) == 30.0


def test_a_parse_process_death_means_what_its_signal_says() -> None:
    assert retry.parse_process_death(-signal.SIGXCPU) == "cpu"
    assert retry.parse_process_death(-signal.SIGSEGV) == "crash"
    assert retry.parse_process_death(-signal.SIGKILL) == "lost"  # the OOM killer, an operator
    assert retry.parse_process_death(1) == "lost"
    assert retry.parse_process_death(None) == "lost"


def test_only_a_group_tried_before_is_split() -> None:
    assert retry.split_group(2, tried_before=True)
    assert not retry.split_group(1, tried_before=True)
    assert not retry.split_group(16, tried_before=False)
