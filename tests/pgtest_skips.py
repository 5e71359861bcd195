"""A pytest plugin: with ``PROCGRAPH_FAIL_ON_SKIP=1`` (set by .ci/run) a skip fails the run.

Every skipped test (or module skipped at collection) must match a line of the allow-list,
``tests/skip_allowlist.txt`` by default (ini option ``skip_allowlist``, relative to the
rootdir). Each line is ``<glob of the test node id> | <why this skip is acceptable>``; blank
lines and ``#`` comments are ignored, and a line without a reason is an error, so the list
stays short and documented. The skips left over are listed at the end and the exit status
becomes 1 (tests failed), whatever the tests themselves did.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

FAIL_ON_SKIP_ENV = "PROCGRAPH_FAIL_ON_SKIP"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``skip_allowlist`` ini option."""
    parser.addini("skip_allowlist", "file of allowed skips (node id glob | reason)",
                  default="tests/skip_allowlist.txt")


def pytest_configure(config: pytest.Config) -> None:
    """Watch the skips when ``PROCGRAPH_FAIL_ON_SKIP=1``."""
    if os.environ.get(FAIL_ON_SKIP_ENV) == "1":
        config.pluginmanager.register(SkipGuard(config), "procgraph-skip-guard")


def load_allowlist(path: Path) -> list[str]:
    """The node id globs of an allow-list file; raises ValueError for a line with no reason."""
    if not path.is_file():
        return []
    globs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = line.partition("|")
        if not sep or not reason.strip() or not pattern.strip():
            raise ValueError(f"{path}:{number}: write  <node id glob> | <reason>")
        globs.append(pattern.strip())
    return globs


class SkipGuard:
    """Collects the skips of a run; fails the run for those not on the allow-list."""

    def __init__(self, config: pytest.Config) -> None:
        self.file = str(config.getini("skip_allowlist"))
        self.globs = load_allowlist(config.rootpath / self.file)
        self.skips: list[tuple[str, str]] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):  # an xfail is not a skip
            longrepr = report.longrepr
            why = (str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3
                   else str(longrepr))
            self.skips.append((report.nodeid, why.removeprefix("Skipped: ")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A test skipped (in setup, by a mark or in its body)."""
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module or class skipped while collecting."""
        self._record(report)

    def not_allowed(self) -> list[tuple[str, str]]:
        """The skips no allow-list glob matches."""
        return [(nodeid, why) for nodeid, why in self.skips
                if not any(fnmatch.fnmatchcase(nodeid, g) for g in self.globs)]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Turn a green run red when a skip is not allowed."""
        if self.not_allowed() and session.exitstatus in (pytest.ExitCode.OK,
                                                         pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """List the skips that are not allowed, and how to fix that."""
        bad = self.not_allowed()
        if bad:
            terminalreporter.section("skips not on the allow-list", red=True, bold=True)
            for nodeid, why in bad:
                terminalreporter.line(f"SKIPPED {nodeid}: {why}")
            terminalreporter.line(f"{len(bad)} skip(s) fail the run ({FAIL_ON_SKIP_ENV}=1): "
                                  f"fix the cause, or add a line to {self.file}")
