"""The client's errors: one class per kind of answer, all carrying the API's ``code``, ``message``,
``details`` and HTTP ``status``.

Every class is a :class:`LorebaseError`, itself a ``lorebase.errors.LorebaseError``, the
hierarchy the server and the CLI already use: ``except LorebaseError`` catches a failed call
whether it ran locally or over HTTP. Which HTTP status means which class is decided here only
(:func:`error_for`).
"""

from __future__ import annotations

from typing import Any

from lorebase import errors as base


class LorebaseError(base.LorebaseError):
    """A call the server refused or could not answer. ``status`` is None when no answer came."""

    status: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, status: int | None = None
    ) -> None:
        super().__init__(message, details=details, code=code)
        if status is not None:
            self.status = status
            self.status_code = status

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message


class BadRequest(LorebaseError):
    code, status = "bad_request", 400


class Unauthorized(LorebaseError):
    code, status = "unauthorized", 401


class Forbidden(LorebaseError):
    code, status = "forbidden", 403


class NotFound(LorebaseError):
    """Missing, or in another workspace (the server never tells which)."""

    code, status = "not_found", 404


class Conflict(LorebaseError):
    code, status = "conflict", 409


class PayloadTooLarge(LorebaseError):
    code, status = "payload_too_large", 413


class UnsupportedMediaType(LorebaseError):
    code, status = "unsupported_media_type", 415


class ValidationFailed(LorebaseError):
    """422: the request asks for something the server will not do; ``details`` names the fields."""

    code, status = "invalid_input", 422


class RateLimited(LorebaseError):
    """429 after the client's retries; ``retry_after`` is the server's last ``Retry-After``."""

    code, status = "rate_limited", 429
    retry_after: float | None = None


class ServerError(LorebaseError):
    """A 5xx answer that retries did not cure (or a call that is not safe to retry)."""

    code, status = "internal_error", 500


class ConnectionFailed(LorebaseError):
    """No answer: the server could not be reached, or the connection broke."""

    code = "connection_failed"


class ProtocolError(LorebaseError):
    """An answer that is not what the API promises (not JSON, a body of the wrong shape)."""

    code = "bad_response"


_BY_STATUS: dict[int, type[LorebaseError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
    )
}


def error_for(status: int, body: Any, *, retry_after: float | None = None) -> LorebaseError:
    """The exception of an error answer: its class by status, its code, message and details from
    the API's ``{"error": {...}}`` body (or a readable stand-in when the body is something else)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else LorebaseError)
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"the server answered HTTP {status}"
    code = error.get("code")
    exc = cls(
        message, code=code if isinstance(code, str) else None, details=error.get("details"), status=status
    )
    if isinstance(exc, RateLimited):
        exc.retry_after = retry_after
    return exc


__all__ = [
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "LorebaseError",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_for",
]
