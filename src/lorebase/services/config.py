"""Knowledge-base configuration: chunking, embedding model, vector store and notifications.

Stored as JSON on drafts and KBs. Patches are deep-merged so that a client can change one
field (``{"chunking": {"chunk_size": 128}}``) without restating the rest.
"""

from __future__ import annotations

import re
import socket
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from lorebase.crawl.guard import AddressPolicy, BlockedAddress, parse_ip_literal, precheck_url
from lorebase.errors import InvalidInput, PermanentError
from lorebase.settings import Settings


class ChunkingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["recursive", "structure"] = "recursive"
    chunk_size: int = Field(200, ge=16, le=8192)
    chunk_overlap: int = Field(20, ge=0, le=4096)


def _http_url_or_none(field: str, v: str | None) -> str | None:
    """A URL option's value: None when blank, else an http(s) URL with a host (stripped)."""
    if v is None or not v.strip():
        return None
    v = v.strip()
    parts = urlsplit(v)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an http(s) URL with a host")
    return v


class EmbeddingOptions(BaseModel):
    """The model, and for an ``openai:`` model its endpoint and dimension. Never an API key: the
    config is returned by the API to anyone who can read the KB, so keys stay in the server's
    settings (``openai_api_key``, sent to ``openai_base_url`` only)."""

    model_config = ConfigDict(extra="forbid")
    model: str = "local:all-MiniLM-L6-v2"
    #: ``openai:`` only: this KB's endpoint instead of the server's ``openai_base_url`` (sent no key)
    base_url: str | None = Field(None, max_length=2000)
    #: ``openai:`` only: the vectors' dimension, stated, or recorded from the endpoint's first
    #: answer when the draft is validated; an answer of another dimension is refused
    dimensions: int | None = Field(None, ge=1, le=65536)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return _http_url_or_none("base_url", v)


class StoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = "sqlite"


#: one address, no display name, nothing that could smuggle a header (CR/LF, commas, spaces)
_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")


class NotificationOptions(BaseModel):
    """Where to report the end of each pipeline of the KB. Shape only here: whether the server
    can and may send there is decided by ``notification_problems`` (it needs the settings)."""

    model_config = ConfigDict(extra="forbid")
    webhook_url: str | None = Field(None, max_length=2000)
    email_to: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return _http_url_or_none("webhook_url", v)

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        out = [a.strip() for a in v if a.strip()]
        bad = [a for a in out if not _ADDRESS.match(a) or len(a) > 254]
        if bad:
            raise ValueError(f"not a plain email address: {', '.join(bad)}")
        return list(dict.fromkeys(out))


class KbConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunking: ChunkingOptions = Field(default_factory=ChunkingOptions)
    embedding: EmbeddingOptions = Field(default_factory=EmbeddingOptions)
    store: StoreOptions = Field(default_factory=StoreOptions)
    notifications: NotificationOptions = Field(default_factory=NotificationOptions)

    @model_serializer(mode="wrap")
    def _omit_unused(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A KB that notifies nobody, on a local model, keeps the config shape clients have
        always seen (no ``notifications``, no unset ``embedding.base_url`` / ``dimensions``)."""
        data: dict[str, Any] = handler(self)
        notes = data.get("notifications")
        if isinstance(notes, dict) and not notes.get("webhook_url") and not notes.get("email_to"):
            del data["notifications"]
        embedding = data.get("embedding")
        if isinstance(embedding, dict):
            for key in ("base_url", "dimensions"):
                if embedding.get(key) is None:
                    embedding.pop(key, None)
        return data


def default_config(settings: Settings) -> dict[str, Any]:
    return {
        "chunking": settings.chunking.model_dump(),
        "embedding": {"model": settings.embedder},
        "store": {"type": settings.vector_store},
    }


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_config(raw: dict[str, Any]) -> KbConfig:
    try:
        return KbConfig.model_validate(raw)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise InvalidInput("invalid knowledge base config", details=details) from None


def merged_config(settings: Settings, *patches: dict[str, Any] | None) -> dict[str, Any]:
    cfg = default_config(settings)
    for patch in patches:
        if patch:
            cfg = deep_merge(cfg, patch)
    return parse_config(cfg).model_dump()


def webhook_policy(settings: Settings) -> AddressPolicy:
    """The SSRF policy of webhooks: the crawler's rules, with the notify settings' opt-outs."""
    return AddressPolicy.from_settings(settings.notify.allow_private_networks, settings.notify.allowed_hosts)


def notification_problems(settings: Settings, config: dict[str, Any]) -> list[dict[str, str]]:
    """Validation errors of a config's ``notifications`` that depend on the server's settings.

    Checked when a draft is validated, so a KB is never created with a destination that would be
    refused at send time; the sender checks the address again (DNS can change in between).
    """
    notes = config.get("notifications") or {}
    problems: list[dict[str, str]] = []
    url = notes.get("webhook_url")
    if url:
        field = "config.notifications.webhook_url"
        if settings.notify.webhook_secret is None:
            problems.append(
                {
                    "field": field,
                    "message": "webhooks are signed and LOREBASE_NOTIFY__WEBHOOK_SECRET is not set "
                    "on this server; ask its operator to set it",
                }
            )
        if (refusal := webhook_refusal(settings, url)) is not None:
            problems.append({"field": field, "message": refusal})
    if notes.get("email_to") and not settings.smtp.host:
        problems.append(
            {
                "field": "config.notifications.email_to",
                "message": "email is off on this server (LOREBASE_SMTP__HOST is not set)",
            }
        )
    return problems


def webhook_refusal(settings: Settings, url: str) -> str | None:
    """Why the webhook URL may not be called now (scheme, or an address the policy refuses), or
    None. A host name is resolved here; one that does not resolve is left to the send attempt."""
    policy = webhook_policy(settings)
    try:
        precheck_url(url, policy)
    except PermanentError as exc:
        return _webhook_message(exc)
    host = urlsplit(url).hostname or ""
    if parse_ip_literal(host) is not None:
        return None  # an IP literal: precheck_url has judged it
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for ip in dict.fromkeys(str(info[4][0]) for info in infos):
        category = policy.refusal(host, ip)
        if category is not None:
            return f"refused webhook target {url}: {host} resolves to {ip}, {category} ({_OPT_OUT})"
    return None


_OPT_OUT = "set LOREBASE_NOTIFY__ALLOW_PRIVATE_NETWORKS=true or LOREBASE_NOTIFY__ALLOWED_HOSTS to allow it"


def _webhook_message(exc: PermanentError) -> str:
    if isinstance(exc, BlockedAddress):
        return f"refused webhook target {exc.target}: {exc.ip} is a {exc.category} address ({_OPT_OUT})"
    return exc.message.replace("refused to fetch", "refused webhook target")
