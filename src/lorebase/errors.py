"""The small error hierarchy that the API, the CLI and the job runner all understand.

The API maps each class to an HTTP status (see ``api/errors.py``); the job runner maps
``TransientError`` to a retry with backoff and ``PermanentError`` to a failed document.
"""

from __future__ import annotations

from typing import Any


class LorebaseError(Exception):
    """Base class: carries a stable machine-readable ``code`` and optional ``details``."""

    code = "error"
    status_code = 500

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class NotFound(LorebaseError):
    """The resource does not exist *in the caller's workspace* (never reveal others')."""

    code = "not_found"
    status_code = 404


class Gone(LorebaseError):
    """The resource existed and its content is no longer kept (an original removed by retention)."""

    code = "gone"
    status_code = 410


class Conflict(LorebaseError):
    """The request conflicts with the resource's current state."""

    code = "conflict"
    status_code = 409


class InvalidInput(LorebaseError):
    """The request is well-formed JSON but asks for something impossible."""

    code = "invalid_input"
    status_code = 422


class Unauthorized(LorebaseError):
    code = "unauthorized"
    status_code = 401


class Forbidden(LorebaseError):
    """The key is valid but its scopes do not allow this (a ``read`` key creating something)."""

    code = "forbidden"
    status_code = 403


class PayloadTooLarge(LorebaseError):
    code = "payload_too_large"
    status_code = 413


class UnsupportedMediaType(LorebaseError):
    code = "unsupported_media_type"
    status_code = 415


class RateLimited(LorebaseError):
    """Too many requests of one kind from one API key; ``retry_after`` (seconds) goes out as the
    ``Retry-After`` header."""

    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, *, retry_after: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class JobError(LorebaseError):
    """Raised inside a job; ``kind`` says whether retrying can help."""

    kind = "permanent"


class TransientError(JobError):
    """Network trouble, timeouts, HTTP 429/5xx, lock contention: worth retrying.

    ``retry_after`` (seconds), when the remote said so, overrides the computed backoff if larger.
    """

    kind = "transient"
    code = "transient"
    status_code = 503  # reaching the API (an upload while S3 is down): try again later

    def __init__(self, message: str, *, retry_after: float | None = None, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class PermanentError(JobError):
    """Unsupported or corrupt input, 404, validation: retrying cannot help; fail the document."""

    kind = "permanent"
    code = "permanent"


class LeaseLost(Exception):
    """The job's lease was taken over (or the job was cancelled): the worker must stop writing."""


class Interrupted(Exception):
    """A cooperative stop requested between batches: pause, cancel or worker drain."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "paused" | "cancelled" | "draining"
