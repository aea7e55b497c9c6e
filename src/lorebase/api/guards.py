"""Request guards that run before every route (``FastAPI(dependencies=[...])``): inputs that
pass the schema but that no database can store or compare answer 422 instead of a 500.

* an integer query parameter (``offset``, ``limit``, ``after``, ``days``…) outside the signed
  64-bit range: SQLite raises ``OverflowError`` and PostgreSQL ``NumericValueOutOfRange`` on it;
* a NUL character in a path or query parameter: PostgreSQL text cannot hold one (psycopg raises
  on the bound value), so an id or filter containing one would crash the lookup.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError

#: the largest integer SQLite and PostgreSQL (bigint) accept
INT64_MAX = 2**63 - 1
_INTEGER = re.compile(r"[+-]?\d+")


def _error(location: str, name: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": (location, name), "msg": message, "input": None}]
    )


def _beyond_int64(value: str) -> bool:
    digits = value.strip().lstrip("+-").lstrip("0")
    # int() refuses more than 4300 digits (a ValueError): compare lengths first
    return len(digits) > len(str(INT64_MAX)) or (bool(digits) and int(digits) > INT64_MAX)


def storable_parameters(request: Request) -> None:
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise _error("query", name, "NUL characters are not allowed")
        if _INTEGER.fullmatch(value.strip()) and _beyond_int64(value):
            raise _error("query", name, f"must be between {-INT64_MAX} and {INT64_MAX}")
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _error("path", name, "NUL characters are not allowed")
