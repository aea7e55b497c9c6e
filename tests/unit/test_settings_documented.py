"""Every setting is documented in the README's configuration table (a missing row fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from lorebase.errors import InvalidInput
from lorebase.runtime import check_supported
from lorebase.settings import JobSettings, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _variables(model: type[BaseModel], prefix: str = "LOREBASE_") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_variables(ann, f"{prefix}{name.upper()}__"))
        else:
            assert field.description, f"{prefix}{name.upper()} has no description"
            out.append(f"{prefix}{name.upper()}")
    return out


def test_every_setting_has_a_row_in_the_readme_configuration_table() -> None:
    text = README.read_text()
    missing = [v for v in _variables(Settings) if f"| `{v}` |" not in text]
    assert missing == []


def test_nested_settings_are_read_from_double_underscore_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOREBASE_JOBS__LEASE_SECONDS", "60")
    monkeypatch.setenv("LOREBASE_CHUNKING__CHUNK_SIZE", "128")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.jobs.lease_seconds == 60 and s.chunking.chunk_size == 128


def test_a_heartbeat_slower_than_half_the_lease_is_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        JobSettings(lease_seconds=10, heartbeat_seconds=6)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("executor", "celery", "LOREBASE_EXECUTOR=celery needs a broker"),
        ("executor", "rq", "LOREBASE_EXECUTOR=rq needs LOREBASE_REDIS_URL"),
        ("database_url", "mysql://localhost/x", "LOREBASE_DATABASE_URL"),
        ("embedder", "openai:text-embedding-3-small", "LOREBASE_EMBEDDER"),
    ],
)
def test_settings_for_pieces_not_in_this_build_are_refused_clearly(
    tmp_path: Path, field: str, value: str, needle: str
) -> None:
    s = Settings(data_dir=tmp_path, _env_file=None, **{field: value})  # type: ignore[call-arg]
    with pytest.raises(InvalidInput, match=needle):
        check_supported(s)


def test_postgresql_takes_the_pgvector_store_and_database_blobs_unless_told_otherwise(tmp_path: Path) -> None:
    url = "postgresql+psycopg://localhost/x"
    s = Settings(data_dir=tmp_path, _env_file=None, database_url=url)  # type: ignore[call-arg]
    assert (s.vector_store, s.blob_store) == ("pgvector", "database")
    told = Settings(data_dir=tmp_path, _env_file=None, database_url=url, blob_store="local")  # type: ignore[call-arg]
    assert told.blob_store == "local"
    check_supported(s)  # a supported pair
    default = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert (default.vector_store, default.blob_store) == ("sqlite", "local")


def test_the_scaled_mode_settings_are_accepted(tmp_path: Path) -> None:
    redis = "redis://127.0.0.1:6379/0"
    for extra in ({"executor": "celery", "redis_url": redis}, {"executor": "rq", "redis_url": redis}):
        check_supported(Settings(data_dir=tmp_path, _env_file=None, **extra))  # type: ignore[arg-type]
    amqp = Settings(
        data_dir=tmp_path, _env_file=None, executor="celery", broker_url="amqp://guest@localhost//"
    )  # type: ignore[call-arg]
    check_supported(amqp)
    assert amqp.resolved_broker_url == "amqp://guest@localhost//"


@pytest.mark.parametrize(
    ("database_url", "store", "needle"),
    [
        ("postgresql+psycopg://localhost/x", "sqlite", "use LOREBASE_VECTOR_STORE=pgvector"),
        (None, "pgvector", "use LOREBASE_VECTOR_STORE=sqlite"),
    ],
)
def test_a_store_on_the_wrong_database_is_refused_clearly(
    tmp_path: Path, database_url: str | None, store: str, needle: str
) -> None:
    s = Settings(data_dir=tmp_path, _env_file=None, database_url=database_url, vector_store=store)  # type: ignore[call-arg]
    with pytest.raises(InvalidInput, match=needle):
        check_supported(s)


def test_an_external_store_whose_package_is_missing_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "chromadb" else real(name, *a)
    )
    s = Settings(data_dir=tmp_path, _env_file=None, vector_store="chroma")  # type: ignore[call-arg]
    with pytest.raises(
        InvalidInput, match=r"LOREBASE_VECTOR_STORE=chroma needs chromadb: pip install 'lorebase\[chroma\]'"
    ):
        check_supported(s)


def test_qdrant_with_broker_workers_needs_a_server(tmp_path: Path) -> None:
    s = Settings(
        data_dir=tmp_path, _env_file=None, vector_store="qdrant", executor="celery", redis_url="redis://x"
    )  # type: ignore[call-arg]
    with pytest.raises(InvalidInput, match="needs LOREBASE_QDRANT_URL"):
        check_supported(s)
    check_supported(s.model_copy(update={"qdrant_url": "http://qdrant:6333"}))
