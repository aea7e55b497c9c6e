"""Where retry is decided: will this work run again, when, does the attempt count, is it dead?

Every path that ends an attempt, or part of one, asks this module and nothing else:

* a handler raised: the executor's ``run_job`` calls :func:`classify`, then the queue applies
  :func:`after_error` (``JobQueue.retry_later``);
* a worker was lost (its lease expired: SIGKILL, a crashed host, a process cut off from the
  database): the reaper applies :func:`after_loss` (``JobQueue.reap``);
* a parse process died under a document: the parse pool asks :func:`parse_process_death`;
* a group of documents failed transiently: the process task asks :func:`split_group`;
* a page of a crawl could not be fetched: the crawler asks :func:`page_retry`.

**Errors.** ``PermanentError`` (corrupt or unsupported input, 404, validation) fails at once;
``TransientError`` (network, timeouts, HTTP 408/429/5xx, SMTP 4xx, a lost parse process) and
errors nobody classified (a bug, a driver error: bounded by the attempts) are retried. A lost
lease (``LeaseLost``) and a cooperative stop (``Interrupted``: pause, cancel, drain) are not
failures at all.

**The attempt rule.** A claim counts an attempt. An attempt that ends transiently (an error
or a lost worker) *keeps* counting only when it saved no progress: no checkpoint and no
progress write of a resumable task (``JobContext.transaction(progress=True)``, a changed
checkpoint). An attempt that saved progress does not count, and starts the count afresh
(``attempts`` back to 0): the job has shown it moves, and what it saved is never redone. So
``attempts`` counts the attempts in a row that moved nothing, and a job is ``dead`` only
after ``max_attempts`` of those: a resumable job that keeps moving (the embed loop, a crawl)
is never dead-lettered by restarts, however many, while a job that fails or is lost without
moving (a poison document killing its worker every time; a loop stuck on the batch that kills
it) is ``dead`` after ``max_attempts``. A released attempt (pause, drain) never counts.

**Backoff.** Exponential with "equal jitter" (half the ceiling fixed, half random, so
retries of many jobs spread out), capped; a server's ``Retry-After`` wins when it is longer,
capped too.

**Dead letters.** A job whose counted attempts reach ``max_attempts`` ends ``dead``; its
handler's ``on_failure`` then records the error on what the job was working on, in the same
transaction (``JobQueue.reap(on_dead=…)`` for lost workers), so a document never waits on a
job that will not run again. ``max_attempts`` is fixed on the row when the job is enqueued,
from the task's :class:`RetryPolicy` and the enqueuing process's settings: a job's budget does
not change when workers restart with other settings.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import OperationalError

from lorebase.errors import Interrupted, LeaseLost, PermanentError, TransientError

if TYPE_CHECKING:
    from lorebase.settings import JobSettings, Settings

FailureKind = Literal["transient", "permanent", "interrupted", "lease_lost"]
#: a cap on messages kept in ``last_error`` and on documents
MAX_MESSAGE_CHARS = 2000
#: the message of an attempt whose worker was lost
WORKER_LOST = "worker lost (lease expired)"


def describe(exc: BaseException) -> str:
    """A readable one-line message for users (the type name only when the message is empty)."""
    msg = str(exc).strip() or type(exc).__name__
    return msg if len(msg) <= MAX_MESSAGE_CHARS else msg[:MAX_MESSAGE_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class Failure:
    """How an attempt ended, classified."""

    kind: FailureKind
    message: str
    retry_after: float | None = None
    #: ``paused``, ``cancelled`` or ``draining`` for an interruption
    reason: str | None = None
    #: not an error of ours (a bug or a driver error): the traceback is worth logging
    unexpected: bool = False


def classify(exc: BaseException) -> Failure:
    """What an exception raised by a handler means for its job."""
    if isinstance(exc, LeaseLost):
        return Failure("lease_lost", describe(exc))
    if isinstance(exc, Interrupted):
        return Failure("interrupted", exc.reason, reason=exc.reason)
    if isinstance(exc, PermanentError):
        return Failure("permanent", describe(exc))
    if isinstance(exc, TransientError):
        return Failure("transient", describe(exc), retry_after=exc.retry_after)
    if isinstance(exc, OperationalError):  # the database was briefly away or locked
        return Failure("transient", f"database unavailable: {describe(exc.orig or exc)}")
    # unknown: retried, bounded by the attempts (a deterministic bug ends dead, with its message)
    return Failure("transient", f"{type(exc).__name__}: {describe(exc)}", unexpected=True)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt n waits between c/2 and c, where
    c = min(cap, base * 2**(n-1)); a longer ``Retry-After`` wins, up to ``retry_after_cap``."""

    base: float
    cap: float
    retry_after_cap: float | None = None

    @classmethod
    def of(cls, cfg: JobSettings) -> Backoff:
        return cls(cfg.backoff_base_seconds, cfg.backoff_max_seconds)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** max(0, attempts - 1)))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            limit = self.cap if self.retry_after_cap is None else self.retry_after_cap
            delay = max(delay, min(retry_after, limit))
        return delay


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to a job after an attempt: ``pending`` again after ``delay`` seconds, or
    ``dead``; ``attempts``: the job's count from now on (None: unchanged, the attempt counted;
    0: it saved progress, the count starts afresh)."""

    status: Literal["pending", "dead"]
    delay: float = 0.0
    attempts: int | None = None


def after_error(
    *,
    attempts: int,
    max_attempts: int,
    progressed: bool,
    backoff: Backoff,
    retry_after: float | None = None,
) -> Verdict:
    """A transient error ended attempt ``attempts`` (counted at its claim)."""
    if progressed:
        # the next run continues from what this one saved: a fresh count, the first backoff
        return Verdict("pending", backoff.delay(1, retry_after), attempts=0)
    if attempts >= max_attempts:
        return Verdict("dead")
    return Verdict("pending", backoff.delay(attempts, retry_after))


def after_loss(*, attempts: int, max_attempts: int, progressed: bool) -> Verdict:
    """The worker of attempt ``attempts`` was lost (its lease expired). It is run again at once
    (a lost worker is not the job's fault, nothing to back off from), unless it is out of
    attempts without having moved."""
    if progressed:
        return Verdict("pending", attempts=0)
    if attempts >= max_attempts:
        return Verdict("dead")
    return Verdict("pending")


def _jobs_max_attempts(settings: Settings) -> int:
    return settings.jobs.max_attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A task type's retry policy (declared with the task in ``lorebase.tasks``)."""

    #: how many counted attempts a job gets, read from the enqueuing process's settings
    max_attempts_of: Callable[[Settings], int] = _jobs_max_attempts

    def max_attempts(self, settings: Settings) -> int:
        return self.max_attempts_of(settings)


DEFAULT_POLICY = RetryPolicy()


# -- the parse pool, the process task, the crawler --------------------------------------------------
#: signals of a native crash, which under RLIMIT_AS is most often a failed allocation
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGTRAP})


def parse_process_death(exitcode: int | None) -> Literal["cpu", "crash", "lost"]:
    """What a parse process's death means for the document it held.

    ``cpu``: SIGXCPU, the document's CPU limit (permanent: it would need as much again);
    ``crash``: a native crash, most likely the memory limit (permanent); ``lost``: anything else,
    killed from outside (the OOM killer, an operator, its worker dying): transient, retried.
    """
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        if sig == signal.SIGXCPU:
            return "cpu"
        if sig in CRASH_SIGNALS:
            return "crash"
    return "lost"


def split_group(documents: int, *, tried_before: bool) -> bool:
    """A group of documents that failed transiently (``tried_before``: a parse process died under
    it, or its last attempt counted: it failed or lost its worker) is split into one job per
    document rather than tried whole again, so that a poison document (one that kills its
    parser, or its worker, every time) ends ``dead`` alone while its siblings are indexed."""
    return tried_before and documents >= 2


#: the crawler's per-page backoff: 2, 4, 8 … s up to a minute (a Retry-After up to five minutes)
PAGE_BACKOFF = Backoff(base=2.0, cap=60.0, retry_after_cap=300.0)


def page_retry(attempts: int, max_attempts: int, retry_after: float | None) -> float | None:
    """Seconds until a page that answered 429/5xx or timed out (its ``attempts``-th fetch) is
    fetched again, or None once it has had ``max_attempts`` (``crawl.max_attempts``): its
    document then fails, transient. The page waits in the frontier; the crawl goes on."""
    if attempts >= max_attempts:
        return None
    return PAGE_BACKOFF.delay(attempts, retry_after)
