"""PDF parsing: pages per second and the parse process's peak memory, 10 vs 1,000 pages.

Generates PDFs with fpdf2 in a temp dir (each page: a running header and a page-number footer, a
bold heading, three body paragraphs and a ruled 6-row table), then parses each file with
``PdfParser`` in a **fresh child process** (``python -c``, the same interpreter) that reports
its own ``ru_maxrss`` before and after the parse and the parse's wall time. Pages are read one
at a time (``adapters/parsers/pdf.py``), so the 1,000-page peak should stay within 1.5x of the
10-page peak; ``rss_ratio`` is that quotient, ``target_met`` says whether it held. Also times a
10,000-page PDF with no text layer, which must fail fast with "no extractable text".

Prints one JSON line on stdout (with ``load_average``); progress goes to stderr.

    .venv/bin/python benchmarks/pdf_pages.py [--pages 10,1000] [--empty 10000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fpdf import FPDF

_CHILD = """
import json, resource, sys, time
from lorebase.adapters.parsers.pdf import PdfParser
from lorebase.errors import PermanentError
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, cpu = time.perf_counter(), time.process_time()
try:
    doc = PdfParser().parse(data)
    blocks, error = len(doc.blocks), None
except PermanentError as exc:
    blocks, error = 0, str(exc)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "blocks": blocks, "error": error,
                  "rss_before_kib": before, "peak_rss_kib": after}))
"""


class _Doc(FPDF):
    def header(self) -> None:
        self.set_font("Helvetica", size=8)
        self.set_y(6)
        self.cell(0, 5, "Benchmark Manual - generated", align="C")
        self.set_y(20)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, f"Page {self.page_no()}", align="C")


def make_pdf(pages: int) -> bytes:
    pdf = _Doc()
    pdf.set_auto_page_break(False)
    for n in range(pages):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 9, f"Chapter {n + 1}: pump maintenance", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for p in range(3):
            text = f"Paragraph {p} of page {n + 1} explains how to check seals, bearings and valves. " * 4
            pdf.multi_cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
        pdf.set_font("Helvetica", size=10)
        with pdf.table() as table:
            for values in [["Part", "Number", "Interval"]] + [
                [f"part {k}", f"P-{n}-{k}", f"{k + 1} months"] for k in range(5)
            ]:
                row = table.row()
                for value in values:
                    row.cell(value)
    return bytes(pdf.output())


def make_empty_pdf(pages: int) -> bytes:
    pdf = FPDF()
    for _ in range(pages):
        pdf.add_page()
    return bytes(pdf.output())


def parse_in_child(path: Path) -> dict[str, object]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, env=env, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", default="10,1000", help="page counts to compare (first is the baseline)")
    parser.add_argument("--empty", type=int, default=10_000, help="pages of the PDF without text")
    parser.add_argument("--smoke", action="store_true", help="10 vs 100 pages, 1,000 empty")
    args = parser.parse_args()
    counts = [10, 100] if args.smoke else [int(c) for c in args.pages.split(",")]
    empty = 1000 if args.smoke else args.empty
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pages in counts:
            path = Path(tmp) / f"p{pages}.pdf"
            print(f"generating {pages} pages", file=sys.stderr)
            path.write_bytes(make_pdf(pages))
            run = parse_in_child(path)
            run["pages_per_s"] = round(pages / float(run["seconds"]), 1)  # type: ignore[arg-type]
            run["pages_per_cpu_s"] = round(pages / float(run["cpu_seconds"]), 1)  # type: ignore[arg-type]
            run["file_mib"] = round(path.stat().st_size / 1024**2, 2)
            figures[str(pages)] = run
            print(f"{pages} pages: {run}", file=sys.stderr)
        path = Path(tmp) / "empty.pdf"
        path.write_bytes(make_empty_pdf(empty))
        started = time.perf_counter()
        run = parse_in_child(path)
        figures[f"empty_{empty}"] = {
            "seconds": run["seconds"],
            "child_total_seconds": time.perf_counter() - started,
            "error": run["error"],
        }
    base, big = figures[str(counts[0])], figures[str(counts[-1])]
    ratio = big["peak_rss_kib"] / base["peak_rss_kib"]  # type: ignore[index, operator]
    figures["rss_ratio"] = round(ratio, 3)
    figures["target_met"] = ratio <= 1.5
    figures["load_average"] = os.getloadavg()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
