"""The end of a CI run: the phase table, the budget verdict and the one line CI reads.

Reads the phase log written by ``.ci/run`` (one tab-separated line per phase: name, status,
milliseconds, the JUnit reports its pytest runs must write and, for a phase that ran beside the
others, "beside") and every JUnit XML file in the results directory, and prints, last of all::

    ci: N passed, M failed

N is the sum of the passed test cases over every pytest run (cases minus failures, errors and
skips, from their JUnit XML); M is the failed and erroring cases, plus one for every phase that
failed without a failing test case to show for it (lint, an install, a benchmark, a pytest run
that collected nothing or wrote no report). Exits 1 when M > 0 or a phase did not end "ok".

Standard library only: it must run when the virtualenv could not even be installed.

    python3 .ci/report.py PHASE_LOG RESULTS_DIR BUDGET_SECONDS WALL_SECONDS
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Counts:
    tests: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.skipped

    def add(self, other: Counts) -> None:
        self.tests += other.tests
        self.failed += other.failed
        self.skipped += other.skipped


def junit_counts(path: Path) -> Counts:
    """Test cases of one JUnit XML report (pytest writes <testsuites><testsuite …>)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = Counts()
    for suite in suites:
        counts.add(
            Counts(
                tests=int(suite.get("tests", 0)),
                failed=int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
                skipped=int(suite.get("skipped", 0)),
            )
        )
    return counts


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


def main(phase_log: Path, results: Path, budget: float, wall: float) -> int:
    phases = []
    if phase_log.exists():
        for line in phase_log.read_text().splitlines():
            name, status, millis, reports, *rest = line.split("\t")
            beside = bool(rest and rest[0] == "beside")
            phases.append((name, status, int(millis) / 1000, reports.split(",") if reports else [], beside))
    reports: dict[str, Counts] = {}
    unreadable: list[str] = []
    for path in sorted(results.glob("*.xml")):
        try:
            reports[path.stem] = junit_counts(path)
        except (ET.ParseError, ValueError) as exc:
            unreadable.append(f"{path.name}: {exc}")

    total = Counts()
    extra_failures = 0
    width = max([len(p[0]) for p in phases] + [5])
    print(f"\n== phases (budget {clock(budget)})")
    print(f"  {'phase':<{width}}  {'time':>6}  {'status':<8}  tests")
    for name, status, seconds, names, beside in phases:
        counts = Counts()
        missing = [n for n in names if n not in reports]
        for n in names:
            counts.add(reports.get(n, Counts()))
        total.add(counts)
        note = "(ran beside the phases above it, at nice 19)" if beside else ""
        if names:
            note = f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped"
            if missing:
                note += f"; no JUnit report from {', '.join(missing)}"
            elif counts.tests == 0:
                note += "; no test ran"
        failed_without_case = status != "ok" and counts.failed == 0
        if failed_without_case or (names and (missing or counts.tests == 0)):
            extra_failures += 1
        print(f"  {name:<{width}}  {clock(seconds):>6}  {status:<8}  {note}")
    print(f"  {'wall time':<{width}}  {clock(wall):>6}")
    for problem in unreadable:
        print(f"warning: unreadable JUnit report {problem}")
        extra_failures += 1
    if wall > budget:
        print(f"warning: this run took {clock(wall)}, over the {clock(budget)} budget (tests/README.md)")
    failed = total.failed + extra_failures
    print(f"ci: {total.passed} passed, {failed} failed")
    return 1 if failed or any(p[1] != "ok" for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
