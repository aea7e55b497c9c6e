"""The README's Python client example, copied out of README.md and run as a user would run it
(a fresh Python process, LOREBASE_SERVER_URL and LOREBASE_API_KEY in its environment) against the
live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import Remote

README = Path(__file__).resolve().parents[3] / "README.md"
MARKER = "<!-- readme-client-example"


def readme_example() -> str:
    text = README.read_text()
    found = re.search(re.escape(MARKER) + r".*?-->\n```python\n(.*?)\n```", text, re.S)
    assert found, "README.md lost its client example"
    return found.group(1)


def test_the_readme_client_example_runs_against_a_live_server(remote: Remote, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "holidays.md").write_text(
        "# Holidays\n\nEvery employee has 25 days of holiday allowance per year.\n"
    )
    env = {
        **os.environ,
        "LOREBASE_SERVER_URL": remote.url,
        "LOREBASE_API_KEY": remote.key,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    run = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "True"  # the draft validated
    hits = [line for line in lines if re.match(r"\d\.\d{3}  ", line)]
    assert hits and "Parking" in hits[0], run.stdout  # the record about parking ranks first
    assert lines[-1].startswith("404 not_found ")
    with remote.client() as lb:
        kb = lb.find_kb("handbook")
        assert kb.status == "ready" and kb.counts.indexed == 2
        lb.delete_kb(kb.id)
