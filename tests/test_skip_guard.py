"""The CI skip guard (tests/pgtest_skips.py): a skip not on the allow-list fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgtest_skips import FAIL_ON_SKIP_ENV, load_allowlist

TESTS = """
import pytest

def test_passes():
    pass

def test_allowed():
    pytest.skip("no GPU here")

@pytest.mark.skipif(True, reason="a dependency is missing")
def test_not_allowed():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail_is_not_a_skip():
    assert False
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nskip_allowlist = allow.txt\n")
    pytester.makepyfile(test_sample=TESTS)
    (pytester.path / "allow.txt").write_text(
        "# comment\n\ntest_sample.py::test_allowed | a GPU provider is not on every runner\n")
    return pytester


def test_without_the_variable_skips_pass(project: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAIL_ON_SKIP_ENV, raising=False)
    result = project.runpytest("-p", "pgtest_skips")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_a_skip_not_allowed_fails_the_run_and_is_named(project: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_ON_SKIP_ENV, "1")
    result = project.runpytest("-p", "pgtest_skips")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*skips not on the allow-list*",
        "SKIPPED test_sample.py::test_not_allowed: a dependency is missing",
        "1 skip(s) fail the run*allow.txt",
    ])
    assert "SKIPPED test_sample.py::test_allowed" not in result.stdout.str()


def test_allowed_skips_keep_the_run_green(project: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_ON_SKIP_ENV, "1")
    (project.path / "allow.txt").write_text(
        "test_sample.py::test_allowed | a GPU provider is not on every runner\n"
        "test_sample.py::test_not_* | tested here\n")
    result = project.runpytest("-p", "pgtest_skips")
    assert result.ret == pytest.ExitCode.OK


def test_a_module_skipped_at_collection_counts(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_ON_SKIP_ENV, "1")
    pytester.makepyfile(test_mod="import pytest\npytest.importorskip('no_such_module_xyz')\n")
    result = pytester.runpytest("-p", "pgtest_skips")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED test_mod.py: could not import 'no_such_module_xyz'*"])


def test_an_allowlist_line_needs_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "allow.txt"
    bad.write_text("tests/x.py::test_y\n")
    with pytest.raises(ValueError, match=r"allow\.txt:1"):
        load_allowlist(bad)


def test_the_repository_allowlist_is_valid_and_short() -> None:
    globs = load_allowlist(Path(__file__).parent / "skip_allowlist.txt")
    assert 0 < len(globs) <= 10
