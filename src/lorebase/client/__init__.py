"""The lorebase Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio) over httpx.

Light on purpose: it imports httpx, pydantic and the API's request models, never the server (no
SQLAlchemy, no torch, no FastAPI). See ``README.md`` in this folder and the project README.
"""

from lorebase.client.aio import AsyncClient
from lorebase.client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    LorebaseError,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ServerError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from lorebase.client.models import Event, KnowledgeBase, Pipeline, SearchResponse, SearchResult
from lorebase.client.retry import RetryPolicy
from lorebase.client.sync import Client

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Event",
    "Forbidden",
    "KnowledgeBase",
    "LorebaseError",
    "NotFound",
    "PayloadTooLarge",
    "Pipeline",
    "ProtocolError",
    "RateLimited",
    "RetryPolicy",
    "SearchResponse",
    "SearchResult",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]
