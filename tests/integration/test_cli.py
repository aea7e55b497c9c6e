"""The ``lorebase`` command line on a local data dir, run in-process with Typer's CliRunner."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import func, select
from typer.testing import CliRunner

from conftest import make_settings
from lorebase.cli.main import app
from lorebase.db.models import Document, Pipeline, QueryLog, Source
from lorebase.errors import Unauthorized
from lorebase.runtime import Runtime
from lorebase.services.auth import authenticate, local_principal
from lorebase.settings import get_settings
from support.testdb import database_url_for

BEES = "# Honeybees\n\nForager bees perform a waggle dance to tell their sisters where the flowers are.\n"
GLACIERS = "# Glaciers\n\nThe Aletsch glacier in Switzerland is the largest glacier in the Alps.\n"
GLACIERS_EDITED = (
    "# Glaciers\n\nThe Perito Moreno glacier in Patagonia is still advancing into Lake Argentino.\n"
)


class Cli:
    """Runs ``lorebase`` commands against one data dir, as a user's shell would."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()
        self.env = {
            "LOREBASE_DATA_DIR": str(data_dir),
            "LOREBASE_API_KEY": None,
            "LOREBASE_SERVER_URL": None,
            "COLUMNS": "200",
        }
        if url := database_url_for(data_dir):  # a PostgreSQL test run: the data dir's database
            self.env["LOREBASE_DATABASE_URL"] = url

    def __call__(self, *args: str) -> Result:
        get_settings.cache_clear()  # settings are cached per process; each command reads the env anew
        try:
            return self.runner.invoke(app, list(args), env=self.env)
        finally:
            get_settings.cache_clear()

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def runtime(self) -> Runtime:
        return Runtime(make_settings(self.data_dir))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    yield Cli(tmp_path / "data")
    get_settings.cache_clear()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.md").write_text(BEES)
    (docs / "glaciers.md").write_text(GLACIERS)
    (docs / "firmware.bin").write_bytes(b"\x7fELF\x02\x01" + b"\x00" * 64)
    return docs


def _last_json(output: str) -> dict[str, Any]:
    return json.loads(output.strip().splitlines()[-1])


def _kb(cli: Cli, name: str) -> dict[str, Any]:
    return json.loads(cli.ok("kb", "show", name).stdout)


def test_ingest_a_folder_builds_a_kb_and_ignores_unsupported_files(cli: Cli, folder: Path) -> None:
    result = cli.ok("ingest", str(folder), "--kb", "notes")
    assert "created knowledge base notes" in result.stdout and "from 2 files" in result.stdout
    assert "completed" in result.stdout
    kb = _kb(cli, "notes")
    assert kb["name"] == "notes" and kb["status"] == "ready"
    assert kb["counts"] == {"documents": 2, "indexed": 2, "failed": 0, "chunks": 2}


def test_ingest_names_a_document_that_fails_as_it_follows_the_event_stream(cli: Cli, folder: Path) -> None:
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 this is not really a PDF")
    result = cli.ok("ingest", str(folder), "--kb", "notes")
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed broken.pdf: ")]
    assert len(failed) == 1, result.stdout  # told once, when it failed, with its error
    assert "completed with errors" in result.stdout
    assert _kb(cli, "notes")["counts"] == {"documents": 3, "indexed": 2, "failed": 1, "chunks": 2}


def test_ingest_again_reprocesses_only_the_changed_file(cli: Cli, folder: Path) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    (folder / "glaciers.md").write_text(GLACIERS_EDITED)
    result = cli.ok("ingest", str(folder), "--kb", "notes")
    assert "adding 2 files to notes (1 unchanged)" in result.stdout
    kb = _kb(cli, "notes")
    rt = cli.runtime()
    try:
        with rt.db.read_session() as s:
            docs = s.execute(
                select(Document.filename, Document.pipeline_id, Document.status).order_by(Document.created_at)
            ).all()
    finally:
        rt.close()
    reprocessed = [d.filename for d in docs if d.pipeline_id == kb["latest_pipeline_id"]]
    assert reprocessed == ["glaciers.md"]
    assert all(d.status == "indexed" for d in docs)


def test_ingest_again_replaces_the_old_version_of_a_changed_file(cli: Cli, folder: Path) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    (folder / "glaciers.md").write_text(GLACIERS_EDITED)
    cli.ok("ingest", str(folder), "--kb", "notes")
    found = json.loads(
        cli.ok("search", "--kb", "notes", "Aletsch glacier Switzerland", "--json", "--mode", "keyword").stdout
    )
    assert [r["text"] for r in found["results"] if "Aletsch" in r["text"]] == []
    assert _kb(cli, "notes")["counts"]["documents"] == 2


def test_search_json_ranks_the_right_file_first(cli: Cli, folder: Path) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    for query, expected in (
        ("how do bees tell each other where flowers are", "bees.md"),
        ("largest glacier in the Alps", "glaciers.md"),
    ):
        result = cli.ok("search", "--kb", "notes", query, "--json")
        body = json.loads(result.stdout)
        assert body["query"] == query and body["mode"] == "hybrid"
        assert body["results"][0]["filename"] == expected
        assert body["results"][0]["text"] in (BEES + GLACIERS)


def test_kb_list_and_show_by_name_or_id(cli: Cli, folder: Path) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    listed = cli.ok("kb", "list").stdout
    assert "1 knowledge bases" in listed and "notes" in listed and "ready" in listed
    kb = _kb(cli, "notes")
    assert kb["counts"]["documents"] == 2 and kb["config"]["chunking"]["chunk_size"] == 200
    assert _kb(cli, kb["id"])["id"] == kb["id"]
    assert kb["id"] in listed
    missing = cli("kb", "show", "nope")
    assert missing.exit_code == 1 and "no knowledge base named 'nope'" in missing.stderr


def test_kb_delete_yes_removes_the_kb_and_its_documents(cli: Cli, folder: Path) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    deleted = cli.ok("kb", "delete", "notes", "--yes")
    assert "deleted notes" in deleted.stdout
    assert "0 knowledge bases" in cli.ok("kb", "list").stdout
    missing = cli("kb", "show", "notes")
    assert missing.exit_code == 1 and "no knowledge base named 'notes'" in missing.stderr
    rt = cli.runtime()
    try:
        with rt.db.read_session() as s:
            assert s.execute(select(func.count()).select_from(Document)).scalar_one() == 0
    finally:
        rt.close()


def test_kb_delete_without_yes_asks_and_keeps_the_kb_when_refused(cli: Cli, folder: Path) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    result = cli.runner.invoke(app, ["kb", "delete", "notes"], input="n\n", env=cli.env)
    assert result.exit_code == 1 and "Delete notes (2 documents)?" in result.output
    assert _kb(cli, "notes")["status"] == "ready"


def test_keys_create_prints_a_key_that_authenticates_to_the_workspace(cli: Cli) -> None:
    result = cli.ok("keys", "create", "--workspace", "team")
    key = result.stdout.strip()
    assert key.startswith("lb_") and "\n" not in key
    assert "team" in result.stderr
    rt = cli.runtime()
    try:
        principal = authenticate(rt.db, key)
        assert principal.workspace_id == local_principal(rt.db, "team").workspace_id
        assert principal.workspace_id != local_principal(rt.db, "default").workspace_id
    finally:
        rt.close()


def test_keys_list_shows_prefixes_and_scopes_never_the_secret_and_revoke_ends_a_key(cli: Cli) -> None:
    reader = cli.ok(
        "keys", "create", "--workspace", "team", "--name", "bot", "--scopes", "read"
    ).stdout.strip()
    other = cli.ok("keys", "create", "--workspace", "ops").stdout.strip()
    listed = json.loads(cli.ok("keys", "list", "--json").stdout)
    assert {k["workspace"] for k in listed} == {"team", "ops"}
    bot = next(k for k in listed if k["name"] == "bot")
    assert bot["prefix"] == reader[:10] and bot["scopes"] == ["read"] and bot["state"] == "active"
    table = cli.ok("keys", "list", "--workspace", "team").stdout
    assert "bot" in table and reader[:10] in table and "ops" not in table
    assert reader not in table and other not in cli.ok("keys", "list").stdout  # the secret is never shown

    revoked = cli.ok("keys", "revoke", reader[:10])
    assert bot["id"] in revoked.stdout
    rt = cli.runtime()
    try:
        with pytest.raises(Unauthorized):
            authenticate(rt.db, reader)
        assert authenticate(rt.db, other).scopes == ("read", "write", "admin")
    finally:
        rt.close()
    states = {k["name"]: k["state"] for k in json.loads(cli.ok("keys", "list", "--json").stdout)}
    assert states == {"bot": "revoked", "": "active"}


def test_keys_create_refuses_an_unknown_scope_and_revoke_an_unknown_key(cli: Cli) -> None:
    bad = cli("keys", "create", "--scopes", "read,root")
    assert bad.exit_code == 1 and "scopes must be a non-empty subset" in bad.stderr
    missing = cli("keys", "revoke", "lb_nothere")
    assert missing.exit_code == 1 and "no API key 'lb_nothere'" in missing.stderr
    assert "Traceback" not in bad.output + missing.output


def test_worker_refuses_an_unknown_queue_kind_before_it_starts(cli: Cli) -> None:
    bad = cli("worker", "--queues", "crawl,parse")
    assert bad.exit_code == 2 and "unknown queue kind(s) parse" in bad.stderr, bad.output
    assert "Traceback" not in bad.output and not cli.data_dir.exists()  # refused before any start


def test_keys_create_with_an_expiry_makes_a_key_that_expires(cli: Cli) -> None:
    result = cli.ok("keys", "create", "--expires-in-days", "0.00001")
    key = result.stdout.strip()
    assert "expires" in result.stderr
    time.sleep(1.0)
    rt = cli.runtime()
    try:
        with pytest.raises(Unauthorized, match="expired"):
            authenticate(rt.db, key)
    finally:
        rt.close()


def test_ingest_of_a_missing_path_exits_1_with_a_clear_message(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = cli("ingest", str(missing), "--kb", "notes")
    assert result.exit_code == 1
    assert f"{missing}: no such file or folder" in result.stderr
    assert "Traceback" not in result.output
    assert "0 knowledge bases" in cli.ok("kb", "list").stdout


def test_ingest_of_a_folder_without_supported_files_exits_1(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "image.gif").write_bytes(b"GIF89a")
    result = cli("ingest", str(junk), "--kb", "notes")
    assert result.exit_code == 1 and "no supported files" in result.stderr


def test_jobs_lists_the_jobs_of_the_workspace(cli: Cli, folder: Path) -> None:
    assert "0 jobs" in cli.ok("jobs").stdout
    cli.ok("ingest", str(folder), "--kb", "notes")
    out = cli.ok("jobs", "--status", "succeeded").stdout
    assert "process_document" in out and "pending 0, running 0, dead 0" in out
    bad = cli("jobs", "--status", "exploded")
    assert bad.exit_code == 1 and "unknown status 'exploded'" in bad.stderr


CORPUS = [
    {
        "_id": "d1",
        "title": "Honeybees",
        "text": "Forager honeybees perform a waggle dance to show where nectar is.",
    },
    {"_id": "d2", "title": "Glaciers", "text": "The Aletsch glacier is the largest glacier in the Alps."},
    {"_id": "d3", "title": "Coffee", "text": "Coffee beans pop audibly at the first crack while roasting."},
    {
        "_id": "d4",
        "title": "Lighthouses",
        "text": "A Fresnel lens lets a lighthouse beam reach far out to sea.",
    },
    {
        "_id": "d5",
        "title": "Sourdough",
        "text": "Sourdough rises thanks to wild yeast living in the starter.",
    },
]
QUERIES = [
    {"_id": "q1", "text": CORPUS[1]["text"]},  # identical to a document's text
    {"_id": "q2", "text": "waggle dance of forager honeybees"},
    {"_id": "q3", "text": "Fresnel lens lighthouse beam"},
    {"_id": "q4", "text": "a query without judgements"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td1\t1\nq3\td4\t2\n"


def test_eval_builds_the_kb_from_a_beir_corpus_and_reports_every_mode(cli: Cli, tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (beir / "qrels.tsv").write_text(QRELS)
    args = [
        "eval",
        "--kb",
        "tiny",
        "--queries",
        str(beir / "queries.jsonl"),
        "--qrels",
        str(beir / "qrels.tsv"),
    ]

    result = cli.ok(*args, "--corpus", str(beir / "corpus.jsonl"))
    report = _last_json(result.stdout)
    assert report["queries"] == 3 and set(report["modes"]) == {"vector", "keyword", "hybrid"}
    for mode, m in report["modes"].items():
        assert set(m) >= {"ndcg@10", "recall@10", "recall@100", "ms_per_query"}, mode
        assert 0.0 <= m["ndcg@10"] <= 1.0 and m["recall@10"] <= m["recall@100"] <= 1.0
    assert report["modes"]["hybrid"]["recall@10"] == 1.0
    assert report["modes"]["hybrid"]["ndcg@10"] == 1.0  # each query's document ranks first
    assert report["modes"]["keyword"]["ndcg@10"] == 1.0
    assert _kb(cli, "tiny")["counts"]["documents"] == 5

    again = _last_json(cli.ok(*args, "--modes", "keyword").stdout)  # the KB exists: no rebuild
    assert again["kb_id"] == report["kb_id"] and set(again["modes"]) == {"keyword"}
    assert again["modes"]["keyword"] == {
        **report["modes"]["keyword"],
        "ms_per_query": again["modes"]["keyword"]["ms_per_query"],
    }
    # --version: the live one by number gives the same figures; one the KB never had is an error
    live = _last_json(cli.ok(*args, "--modes", "keyword", "--version", str(again["version"])).stdout)
    assert live["modes"]["keyword"]["ndcg@10"] == again["modes"]["keyword"]["ndcg@10"]
    missing = cli(*args, "--version", "99")
    assert missing.exit_code == 1 and "no version 99" in missing.stderr
    rt = cli.runtime()
    try:
        with rt.db.read_session() as s:
            assert s.execute(select(func.count()).select_from(QueryLog)).scalar_one() == 0
    finally:
        rt.close()


def test_eval_of_a_missing_kb_without_corpus_exits_1(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text(json.dumps(QUERIES[0]) + "\n")
    (tmp_path / "r.tsv").write_text(QRELS)
    result = cli(
        "eval", "--kb", "nope", "--queries", str(tmp_path / "q.jsonl"), "--qrels", str(tmp_path / "r.tsv")
    )
    assert result.exit_code == 1 and "pass --corpus" in result.stderr


def test_ingest_a_url_crawls_it_and_ingesting_it_again_refreshes_only_changes(
    cli: Cli, tmp_path: Path
) -> None:
    from support.site import serve

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    page = "<html><head><title>{t}</title></head><body><main><h1>{t}</h1><p>{p}</p>{a}</main></body></html>"
    (site_dir / "index.html").write_text(
        page.format(t="Bees", p=BEES.splitlines()[2], a='<a href="glaciers.html">glaciers</a>')
    )
    (site_dir / "glaciers.html").write_text(page.format(t="Glaciers", p=GLACIERS.splitlines()[2], a=""))
    cli.env["LOREBASE_CRAWL__ALLOW_PRIVATE_NETWORKS"] = "true"
    with serve(site_dir) as site:
        result = cli.ok("ingest", f"{site.url}/index.html", "--kb", "web", "--max-depth", "1")
        assert "from 1 website" in result.stdout and "completed" in result.stdout
        shown = cli.ok("kb", "show", "web").stdout
        assert json.loads(shown)["counts"] == {"documents": 2, "indexed": 2, "failed": 0, "chunks": 2}, shown
        top = json.loads(cli.ok("search", "--kb", "web", "largest glacier in the Alps", "--json").stdout)
        assert top["results"][0]["url"] == f"{site.url}/glaciers.html"

        import time

        time.sleep(1.1)  # Last-Modified has one-second resolution
        (site_dir / "glaciers.html").write_text(
            page.format(t="Glaciers", p=GLACIERS_EDITED.splitlines()[2], a="")
        )
        result = cli.ok("ingest", f"{site.url}/index.html", "--kb", "web")
        assert f"refreshing {site.url}/index.html" in result.stdout
    rt = cli.runtime()
    try:
        with rt.db.read_session() as s:
            pipeline = s.execute(
                select(Pipeline).where(Pipeline.kind == "crawl").order_by(Pipeline.created_at.desc()).limit(1)
            ).scalar_one()
            sources = s.execute(select(func.count()).select_from(Source)).scalar_one()
    finally:
        rt.close()
    assert sources == 1  # the same website, refreshed, not added twice
    assert pipeline.documents_total == 1 and pipeline.chunks_embedded == 1  # only the edited page
    top = json.loads(cli.ok("search", "--kb", "web", "Perito Moreno glacier", "--json").stdout)
    assert "Perito Moreno" in top["results"][0]["text"]


def test_kb_reindex_builds_a_version_that_goes_live_and_kb_activate_rolls_back(
    cli: Cli, folder: Path
) -> None:
    cli.ok("ingest", str(folder), "--kb", "notes")
    out = cli.ok(
        "kb", "reindex", "notes", "--set", "chunking.chunk_size=64", "--set", "chunking.chunk_overlap=8"
    )
    assert "version 2 builds beside version 1" in out.stdout and "version 2 built and live" in out.stdout
    kb = _kb(cli, "notes")
    assert kb["version"] == 2 and kb["config"]["chunking"]["chunk_size"] == 64
    listed = cli.ok("kb", "versions", "notes").stdout
    assert "retired" in listed and "live" in listed and "64/8" in listed
    assert "version 1 is live" in cli.ok("kb", "activate", "notes", "1").stdout
    assert _kb(cli, "notes")["version"] == 1
    bad = cli("kb", "reindex", "notes", "--set", "chunking.chunk_size=5000")
    assert bad.exit_code == 1 and "chunk_size 5000 exceeds" in bad.stderr
    assert cli("kb", "reindex", "notes", "--set", "nonsense").exit_code != 0
    assert _kb(cli, "notes")["version"] == 1  # nothing changed by the refusals
