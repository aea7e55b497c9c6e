"""`.ci/report.py`: the phase table and the one line CI reads (``ci: N passed, M failed``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / ".ci" / "report.py"


def junit(path: Path, *, tests: int, failures: int = 0, errors: int = 0, skipped: int = 0) -> None:
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites>'
        f'<testsuite name="pytest" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}">'
        "</testsuite></testsuites>"
    )


def run(tmp_path: Path, phases: list[str], *, budget: int = 2700, wall: int = 1200) -> tuple[int, list[str]]:
    log = tmp_path / "phases.tsv"
    log.write_text("".join(line + "\n" for line in phases))
    done = subprocess.run(
        [sys.executable, str(REPORT), str(log), str(tmp_path / "junit"), str(budget), str(wall)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout.splitlines()


def test_a_green_run_sums_every_pytest_run_and_ends_on_the_ci_line(tmp_path: Path) -> None:
    (tmp_path / "junit").mkdir()
    junit(tmp_path / "junit" / "test.xml", tests=10, skipped=2)
    junit(tmp_path / "junit" / "test-scale-celery.xml", tests=5)
    junit(tmp_path / "junit" / "test-scale-rq.xml", tests=4)
    rc, lines = run(
        tmp_path,
        [
            "install\tok\t81000\t",
            "make test\tok\t700000\ttest",
            "make test-scale\tok\t540000\ttest-scale-celery,test-scale-rq",
            "eval (SciFact)\tok\t1460000\t\tbeside",
        ],
    )
    assert rc == 0
    assert lines[-1] == "ci: 17 passed, 0 failed"
    table = "\n".join(lines)
    assert "make test" in table and "11:40" in table and "8 passed, 0 failed, 2 skipped" in table
    assert "9 passed, 0 failed, 0 skipped" in table  # both scaled runs in one row
    assert "ran beside" in table and "24:20" in table
    assert "wall time" in table and "20:00" in table
    assert "over the" not in table


def test_failing_cases_and_a_failed_phase_without_cases_both_count(tmp_path: Path) -> None:
    (tmp_path / "junit").mkdir()
    junit(tmp_path / "junit" / "test.xml", tests=10, failures=1, errors=1)
    rc, lines = run(tmp_path, ["lint\tfailed\t40000\t", "make test\tfailed\t700000\ttest"])
    assert rc == 1
    # 8 passed; 2 failing cases + lint (a failed phase with no case to show for it)
    assert lines[-1] == "ci: 8 passed, 3 failed"


def test_a_run_that_collected_nothing_or_wrote_no_report_fails(tmp_path: Path) -> None:
    (tmp_path / "junit").mkdir()
    junit(tmp_path / "junit" / "test.xml", tests=0)
    (tmp_path / "junit" / "broken.xml").write_text("<testsuites><testsuite")
    rc, lines = run(
        tmp_path,
        ["make test\tok\t1000\ttest", "make test-postgres\tok\t1000\ttest-postgres"],
    )
    assert rc == 1
    table = "\n".join(lines)
    assert "no test ran" in table
    assert "no JUnit report from test-postgres" in table
    assert "unreadable JUnit report broken.xml" in table
    assert lines[-1] == "ci: 0 passed, 3 failed"


def test_a_run_over_budget_warns_and_a_stopped_phase_fails_it(tmp_path: Path) -> None:
    (tmp_path / "junit").mkdir()
    junit(tmp_path / "junit" / "test.xml", tests=3)
    rc, lines = run(
        tmp_path,
        ["make test\tok\t3000000\ttest", "benchmarks\tstopped\t1800000\t", "eval (SciFact)\tnot run\t0\t"],
        wall=4800,
    )
    assert rc == 1
    assert any("over the 45:00 budget" in line for line in lines)
    assert lines[-1].startswith("ci: 3 passed, ")
    assert lines[-1] != "ci: 3 passed, 0 failed"
