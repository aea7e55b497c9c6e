"""``lorebase`` with LOREBASE_SERVER_URL set: the same commands, through the Python client, on the
live server (and never on the local data dir). Commands run in-process with Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from lorebase.cli.main import app
from lorebase.settings import get_settings

from .conftest import Remote

BEES = "# Honeybees\n\nForager bees perform a waggle dance to tell their sisters where the flowers are.\n"
GLACIERS = "# Glaciers\n\nThe Aletsch glacier in Switzerland is the largest glacier in the Alps.\n"
GLACIERS_EDITED = (
    "# Glaciers\n\nThe Perito Moreno glacier in Patagonia is still advancing into Lake Argentino.\n"
)


class RemoteCli:
    def __init__(self, remote: Remote, local_dir: Path) -> None:
        self.local_dir = local_dir
        self.env = {
            "LOREBASE_SERVER_URL": remote.url,
            "LOREBASE_API_KEY": remote.key,
            "LOREBASE_DATA_DIR": str(local_dir),  # must stay untouched
            "COLUMNS": "200",
        }

    def __call__(self, *args: str) -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=self.env)
        finally:
            get_settings.cache_clear()

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result


@pytest.fixture
def cli(remote: Remote, tmp_path: Path) -> RemoteCli:
    return RemoteCli(remote, tmp_path / "local-data")


def test_ingest_creates_the_kb_on_the_server_and_follows_its_event_stream(
    cli: RemoteCli, remote: Remote, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "deep").mkdir(parents=True)
    (docs / "bees.md").write_text(BEES)
    (docs / "deep" / "glaciers.md").write_text(GLACIERS)
    (docs / "firmware.bin").write_bytes(b"\x7fELF" + b"\x00" * 64)
    out = cli.ok("ingest", str(docs), "--kb", "remote-notes").stdout
    assert "created knowledge base remote-notes" in out and "from 2 files" in out, out
    assert "completed" in out.splitlines()[-1]
    with remote.client() as lb:
        kb = lb.find_kb("remote-notes")
        assert kb.status == "ready"
        assert kb.counts.model_dump() == {"documents": 2, "indexed": 2, "failed": 0, "chunks": 2}
        pipeline_id = kb.latest_pipeline_id
    # the bar was fed by the server's SSE stream of that pipeline, read to its end
    assert f"GET /api/v1/pipelines/{pipeline_id}/events" in remote.log.read_text()

    # again, one file edited and one new: the edited one replaces its earlier version (its external
    # id is its path in the folder), the unchanged one is skipped
    (docs / "deep" / "glaciers.md").write_text(GLACIERS_EDITED)
    (docs / "owls.txt").write_text("Barn owls swallow their prey whole and cough up pellets.")
    out = cli.ok("ingest", str(docs), "--kb", "remote-notes").stdout
    assert "adding 3 files to remote-notes (1 unchanged)" in out and "completed" in out, out
    with remote.client() as lb:
        kb = lb.find_kb("remote-notes")
        assert kb.counts.model_dump() == {"documents": 3, "indexed": 3, "failed": 0, "chunks": 3}
        docs_listed = {d.external_id: d for d in lb.list_documents(kb.id).items}
        assert set(docs_listed) == {"bees.md", "deep/glaciers.md", "owls.txt"}
        chunks = lb.list_chunks(docs_listed["deep/glaciers.md"].id).items
        assert [c.text for c in chunks if "Aletsch" in c.text] == [] and "Perito Moreno" in chunks[0].text
    listed = cli.ok("kb", "list").stdout
    assert "remote-notes" in listed and "animals" in listed
    assert not cli.local_dir.exists(), "a remote command touched the local data dir"
    cli.ok("kb", "delete", "remote-notes", "--yes")
    assert "remote-notes" not in cli.ok("kb", "list").stdout


def test_search_prints_the_ranking_of_the_api(cli: RemoteCli, remote: Remote) -> None:
    query = "which animal sings in the ocean"
    printed = json.loads(cli.ok("search", "--kb", "animals", query, "--json").stdout)
    with remote.client() as lb:
        api = lb.search(remote.kb_id, query, top_k=5)
    assert [r["chunk_id"] for r in printed["results"]] == [r.chunk_id for r in api.results]
    assert [r["score"] for r in printed["results"]] == pytest.approx([r.score for r in api.results], abs=1e-5)
    assert printed["results"][0]["external_id"] == "whales"
    table = cli.ok("search", "--kb", remote.kb_id, query, "--top-k", "2").stdout
    assert "Humpback whales" in table and "hybrid search in animals" in table


def test_kb_show_versions_jobs_and_eval_work_remotely(cli: RemoteCli, remote: Remote, tmp_path: Path) -> None:
    shown = json.loads(cli.ok("kb", "show", "animals").stdout)
    assert shown["id"] == remote.kb_id and shown["status"] == "ready"
    assert "live" in cli.ok("kb", "versions", "animals").stdout
    assert "jobs" in cli.ok("jobs", "--limit", "3").stdout
    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    queries.write_text(
        '{"_id": "q1", "text": "where do bees find flowers"}\n{"_id": "q2", "text": "birds hunting at night"}\n'
    )
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tbees\t1\nq2\towls\t1\n")
    out = cli.ok(
        "eval", "--kb", "animals", "--queries", str(queries), "--qrels", str(qrels), "--modes", "hybrid"
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["kb_id"] == remote.kb_id and report["queries"] == 2
    assert report["modes"]["hybrid"]["ndcg@10"] == pytest.approx(1.0)


def test_local_only_commands_say_so_and_errors_are_clear(cli: RemoteCli) -> None:
    for args in (("worker",), ("db", "upgrade"), ("serve",)):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "works on the local data dir only" in result.output and "LOREBASE_SERVER_URL" in result.output
    refused = cli("search", "--kb", "animals", "bees", "--workspace", "other")
    assert refused.exit_code == 2 and "workspace of LOREBASE_API_KEY" in refused.output
    missing = cli("kb", "show", "no-such-kb")
    assert missing.exit_code == 1 and "no knowledge base named 'no-such-kb'" in missing.output
    assert "Traceback" not in missing.output
    assert not cli.local_dir.exists()


def test_keys_are_managed_remotely_with_an_admin_key(cli: RemoteCli, remote: Remote) -> None:
    created = cli.ok("keys", "create", "--scopes", "read", "--name", "reader")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("lb_") and "shown once" in created.stderr
    listed = json.loads(cli.ok("keys", "list", "--json").stdout)
    mine = [k for k in listed if k["name"] == "reader"]
    assert len(mine) == 1 and mine[0]["scopes"] == ["read"] and "key" not in mine[0]
    cli.ok("keys", "revoke", mine[0]["prefix"])
    cli.env["LOREBASE_API_KEY"] = key  # revoked: the server answers 401, told plainly
    refused = cli("kb", "list")
    assert refused.exit_code == 1 and "error:" in refused.output and "Traceback" not in refused.output
