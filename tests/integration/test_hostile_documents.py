"""Hostile documents fail their own document with a readable error, never the worker.

The parse pool is real (spawned processes under RLIMIT_CPU / RLIMIT_AS, a wall clock enforced by
the parent) and so is the HTTP API with its embedded worker threads. The limits are small so
that the test is quick; no assertion depends on timing: a file that overruns more than one
limit may be stopped by either, and the tests accept any of the limit messages for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import finalize_draft, key_headers, make_settings, running_app, wait_pipeline
from lorebase.adapters.parsers.zipguard import DEFAULT_LIMITS as ZIP_DEFAULTS
from lorebase.errors import PermanentError
from lorebase.pipeline.isolated import ParseLimits, ParsePool, Prepared, pool_for
from lorebase.pipeline.types import ChunkingConfig
from lorebase.settings import ParseSettings
from support import hostile

SPEC = "local:all-MiniLM-L6-v2"
CFG = ChunkingConfig(chunk_size=120, chunk_overlap=10)
PDF = "application/pdf"
STOPPED = re.compile(
    r"^parsing stopped: (the file needed more than (2 s of CPU time|512 MiB of memory)"
    r"|the file took longer than 5 s to parse|the parser crashed \(SIG\w+\), most likely because "
    r"the file needed more than 512 MiB of memory)$"
)
GOOD_TEXT = b"Otters hold hands while they sleep so that they do not drift apart on the water.\n"


@pytest.fixture(scope="module")
def endless_pdf() -> bytes:
    return hostile.endless_content_pdf()


def _html(n: int) -> bytes:
    body = "".join(f"<h2>Part {i}</h2><p>{'Tides follow the moon. ' * 20}</p>" for i in range(n))
    return f"<html><head><title>Tides</title></head><body><main>{body}</main></body></html>".encode()


def _vm(pid: int | str, field: str) -> int:
    """A /proc/<pid>/status field in bytes (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (
            ParseLimits(600, 2, 8192, ZIP_DEFAULTS),
            "parsing stopped: the file needed more than 2 s of CPU time",
        ),
        (ParseLimits(600, 600, 256, ZIP_DEFAULTS), "256 MiB of memory"),
        (ParseLimits(1, 600, 8192, ZIP_DEFAULTS), "parsing stopped: the file took longer than 1 s to parse"),
    ],
    ids=["cpu", "memory", "wall-clock"],
)
def test_each_limit_stops_the_document_alone_and_the_pool_carries_on(
    endless_pdf: bytes, limits: ParseLimits, expected: str
) -> None:
    pool = ParsePool(2, limits=limits)
    try:
        pool.start(wait=True)
        before = set(pool.pids())
        hostile_doc, good = pool.prepare_all(
            [
                (endless_pdf, PDF, "endless.pdf", CFG, SPEC, 256),
                (_html(3), "text/html", "tides.html", CFG, SPEC, 256),
            ]
        )
        assert isinstance(hostile_doc, PermanentError) and expected in hostile_doc.message
        assert isinstance(good, Prepared) and good.title == "Tides" and good.drafts
        after = set(pool.pids())
        assert len(after) <= 2 and after != before  # the stopped process was replaced ...
        for pid in after:  # ... and every process left is lean again
            assert _vm(pid, "VmRSS") < 400 * 1024**2
        again = pool.prepare_all([(_html(2), "text/html", "again.html", CFG, SPEC, 256)])
        assert isinstance(again[0], Prepared) and again[0].drafts
    finally:
        pool.shutdown()


@pytest.fixture
def hostile_api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(
        tmp_path / "data",
        parse=ParseSettings(max_cpu_seconds=2, max_seconds=5, max_memory_mb=512),
        jobs={"parse_processes": 2},
    )
    with running_app(settings, workers=2) as client:
        yield client, key_headers(client)


def _draft(client: TestClient, headers: dict[str, str]) -> str:
    r = client.post("/api/v1/kb-drafts", json={"name": "hostile"}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _upload(
    client: TestClient, headers: dict[str, str], draft_id: str, name: str, data: bytes, kind: str
) -> Any:
    return client.post(
        f"/api/v1/kb-drafts/{draft_id}/sources", files=[("files", (name, data, kind))], headers=headers
    )


def _blob_files(client: TestClient) -> set[Path]:
    blob_dir = client.app.state.runtime.settings.blob_dir  # type: ignore[attr-defined]
    return {p for p in Path(blob_dir).rglob("*") if p.is_file()} if Path(blob_dir).exists() else set()


def test_hostile_uploads_are_refused_or_fail_alone_and_the_worker_keeps_indexing(
    hostile_api: tuple[TestClient, dict[str, str]], endless_pdf: bytes
) -> None:
    client, headers = hostile_api
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

    # warm up: one good document indexed end to end (loads the embedding model in this process)
    first = finalize_draft(client, headers, files=[("files", ("otters.txt", GOOD_TEXT, "text/plain"))])
    assert wait_pipeline(client, headers, first["pipeline_id"])["status"] == "completed"

    # refused at upload, nothing stored
    draft_id = _draft(client, headers)
    blobs_before = _blob_files(client)
    r = _upload(client, headers, draft_id, "bomb.docx", hostile.zip_bomb_docx(), docx_type)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["message"] == "refused: the DOCX would expand to 1.2 GB (limit 512 MB)"
    r = _upload(client, headers, draft_id, "x.pdf", hostile.elf_named_pdf(), PDF)
    assert r.status_code == 415, r.text
    assert "named .pdf but its content is an executable (ELF)" in r.json()["error"]["message"]
    assert _blob_files(client) == blobs_before
    draft = client.get(f"/api/v1/kb-drafts/{draft_id}", headers=headers).json()
    assert not draft.get("sources")

    # parsed in one batch with a good file: the bad ones fail alone, with their reason
    hwm_before = _vm("self", "VmHWM")
    body = finalize_draft(
        client,
        headers,
        files=[
            ("files", ("laughs.docx", hostile.billion_laughs_docx(), docx_type)),
            ("files", ("loop.pdf", hostile.circular_xref_pdf(), PDF)),
            ("files", ("endless.pdf", endless_pdf, PDF)),
            ("files", ("otters-again.txt", GOOD_TEXT + b"They also use rocks as tools.\n", "text/plain")),
        ],
        name="hostile",
    )
    state = wait_pipeline(client, headers, body["pipeline_id"])
    assert state["status"] == "completed_with_errors", state
    docs = client.get(f"/api/v1/kbs/{body['kb_id']}/documents", headers=headers).json()["items"]
    by_name = {d["filename"]: d for d in docs}
    assert by_name["otters-again.txt"]["status"] == "indexed"
    for name in ("laughs.docx", "loop.pdf", "endless.pdf"):
        assert by_name[name]["status"] == "failed" and by_name[name]["error_kind"] == "permanent", by_name[
            name
        ]
    assert by_name["laughs.docx"]["error"] == (
        "refused: the DOCX contains XML entity declarations (a billion-laughs attack?) in word/document.xml"
    )
    assert by_name["loop.pdf"]["error"].startswith("could not read PDF: ")
    assert STOPPED.match(by_name["endless.pdf"]["error"]), by_name["endless.pdf"]["error"]
    jobs = client.get(f"/api/v1/jobs?kb_id={body['kb_id']}", headers=headers).json()["items"]
    assert jobs and all(j["attempts"] == 1 for j in jobs)  # permanent: nothing was retried

    # the worker side stayed small: this process (API + worker threads) and its parse processes
    growth = _vm("self", "VmHWM") - hwm_before
    children = pool_for(runtime.settings).pids()
    print(
        f"\npeak RSS growth of the test process across the hostile batch: {growth / 1024**2:.0f} MiB; "
        f"parse processes VmHWM: {[round(_vm(p, 'VmHWM') / 1024**2) for p in children]} MiB"
    )
    assert growth < 300 * 1024**2
    assert children and all(_vm(p, "VmHWM") < (512 + 512) * 1024**2 for p in children)

    # and it keeps working
    later = finalize_draft(
        client, headers, files=[("files", ("later.md", b"# Later\n\nStill indexing.\n", "text/markdown"))]
    )
    assert wait_pipeline(client, headers, later["pipeline_id"])["status"] == "completed"


def test_new_formats_in_the_parse_pool_keep_the_row_cap_and_refuse_zip_bombs() -> None:
    """The row cap reaches the parse processes (``ParseLimits.max_table_rows``); a PPTX zip bomb
    that skipped upload detection (crawled) fails its document; an XLSX with a cell at row
    1,000,000 is parsed quickly."""
    import io

    from openpyxl import Workbook

    from factories import csv_bytes, pptx_bytes

    far = Workbook()
    far.active.append(["Fruit", "Count"])
    far.active.append(["Quince", 3])
    far.active.cell(row=1_000_000, column=1, value="far away")
    far_bytes = io.BytesIO()
    far.save(far_bytes)
    rows = [["n", "square"], *[[i, i * i] for i in range(20)]]
    pool = ParsePool(1, limits=ParseLimits(60, 30, 2048, ZIP_DEFAULTS, max_table_rows=6))
    try:
        pool.start(wait=True)
        capped, bomb, sparse = pool.prepare_all(
            [
                (csv_bytes(rows), "text/csv", "squares.csv", CFG, SPEC, 256),
                (
                    hostile.zip_bomb_of(pptx_bytes([("Deck", ["Slide text."], None)])),
                    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                    "deck.pptx",
                    CFG,
                    SPEC,
                    256,
                ),
                (
                    far_bytes.getvalue(),
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    "far.xlsx",
                    CFG,
                    SPEC,
                    256,
                ),
            ]
        )
        assert isinstance(capped, Prepared)
        text = "\n".join(d.text for d in capped.drafts)
        assert "4 | 16" in text and "5 | 25" not in text  # the header and 5 rows
        assert isinstance(bomb, PermanentError)
        assert bomb.message == "refused: the PPTX would expand to 1.2 GB (limit 512 MB)"
        assert isinstance(sparse, Prepared)
        assert [d.text for d in sparse.drafts] == ["Sheet\n\nFruit | Count\nQuince | 3"]
        assert [d.metadata["type"] for d in sparse.drafts] == ["table"]
    finally:
        pool.shutdown()


def test_a_long_ocr_is_stopped_by_the_wall_clock_and_leaves_no_tesseract_behind() -> None:
    """Tesseract gets what remains of ``max_seconds`` as its timeout: a dense 100-line page (several
    seconds of OCR) under a 3 s limit fails with the wall-clock message, and no orphan remains."""
    from factories import image_bytes
    from support import tesseract

    tesseract.require()
    page = image_bytes([f"Line {i}: the quick brown fox jumps over the lazy dog again" for i in range(100)])
    pool = ParsePool(1, limits=ParseLimits(3, 600, 8192, ZIP_DEFAULTS))
    try:
        pool.start(wait=True)
        before = pool.pids()
        (stopped,) = pool.prepare_all([(page, "image/png", "dense.png", CFG, SPEC, 256)])
        assert isinstance(stopped, PermanentError)
        assert stopped.message == "parsing stopped: the file took longer than 3 s to parse"
        assert pool.pids() == before  # stopped by its own timeout, not killed by the parent
        children = [
            p for pid in pool.pids() for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
        assert children == []  # the timeout ended tesseract (a killed parse process would orphan it)
    finally:
        pool.shutdown()


def test_ten_thousand_empty_pdf_pages_fail_fast_with_no_extractable_text_and_the_process_stays() -> None:
    """Refused by the PDFium survey before any layout work, well inside a 10 s CPU limit; the same
    parse process then lays out a real PDF."""
    from fpdf import FPDF

    from factories import pdf_bytes

    empty = FPDF()
    for _ in range(10_000):
        empty.add_page()
    pool = ParsePool(1, limits=ParseLimits(60, 10, 2048, ZIP_DEFAULTS))
    try:
        pool.start(wait=True)
        before = set(pool.pids())
        nothing, good = pool.prepare_all(
            [
                (bytes(empty.output()), PDF, "nothing.pdf", CFG, SPEC, 256),
                (pdf_bytes(["Sea otters use stones to open shellfish."]), PDF, "otters.pdf", CFG, SPEC, 256),
            ]
        )
        assert isinstance(nothing, PermanentError)
        assert nothing.message.startswith("no extractable text: the PDF has 10000 page(s) but no text layer")
        assert isinstance(good, Prepared) and "stones" in good.drafts[0].text
        assert set(pool.pids()) == before
    finally:
        pool.shutdown()
