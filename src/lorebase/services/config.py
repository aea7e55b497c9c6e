"""Knowledge-base configuration: chunking, embedding model and vector store, with defaults.

Stored as JSON on drafts and KBs. Patches are deep-merged so that a client can change one
field (``{"chunking": {"chunk_size": 128}}``) without restating the rest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorebase.errors import InvalidInput
from lorebase.pipeline.types import ChunkingConfig
from lorebase.settings import Settings


class ChunkingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["recursive", "structure"] = "recursive"
    chunk_size: int = Field(200, ge=16, le=8192)
    chunk_overlap: int = Field(20, ge=0, le=4096)


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "local:all-MiniLM-L6-v2"


class StoreOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = "sqlite"


class KbConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunking: ChunkingOptions = Field(default_factory=ChunkingOptions)
    embedding: EmbeddingOptions = Field(default_factory=EmbeddingOptions)
    store: StoreOptions = Field(default_factory=StoreOptions)


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


def chunking_of(config: dict[str, Any]) -> ChunkingConfig:
    c = config["chunking"]
    return ChunkingConfig(
        strategy=c["strategy"], chunk_size=c["chunk_size"], chunk_overlap=c["chunk_overlap"]
    )
