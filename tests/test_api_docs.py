"""docs/api.md is what tools/gen_api_docs.py writes from the docstrings, and every name has one."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "gen_api_docs.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_api_docs", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(gen: ModuleType) -> tuple[str, list[str], list[str]]:
    notes: list[str] = []
    text, missing = gen.generate(note=notes.append)
    return text, missing, notes


def test_every_public_module_imports(gen: ModuleType) -> None:
    for name in gen.MODULES:
        importlib.import_module(name)


def test_api_md_is_up_to_date(generated: tuple[str, list[str], list[str]]) -> None:
    text, _, notes = generated
    assert notes == [], f"modules left out of the reference: {notes}"
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert current == text, "docs/api.md is out of date: run python tools/gen_api_docs.py"


def test_every_public_name_has_a_docstring(generated: tuple[str, list[str], list[str]]) -> None:
    _, missing, _ = generated
    assert missing == [], f"public names without a docstring: {', '.join(missing)}"


def test_generation_is_stable(gen: ModuleType,
                              generated: tuple[str, list[str], list[str]]) -> None:
    again, _ = gen.generate(note=lambda _: None)
    assert again == generated[0]
    assert " at 0x" not in again, "no memory addresses in the reference"


def test_covers_the_public_names(gen: ModuleType,
                                 generated: tuple[str, list[str], list[str]]) -> None:
    import procgraph

    text = generated[0]
    for name in procgraph.__all__:
        if name != "__version__":
            assert f"`procgraph.{name}" in text, name
    assert "`procgraph.health.read_heartbeats(" in text
    assert "`procgraph.errors.BrokerUnavailable(" in text


def test_check_mode(gen: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "api.md"
    assert gen.main(["--out", str(out)]) == 0
    assert gen.main(["--check", "--out", str(out)]) == 0
    out.write_text("stale\n", encoding="utf-8")
    assert gen.main(["--check", "--out", str(out)]) == 1


def test_a_missing_module_is_skipped_with_a_note(gen: ModuleType) -> None:
    notes: list[str] = []
    text, _ = gen.generate(("procgraph.errors", "procgraph.no_such_module"), note=notes.append)
    assert "## `procgraph.errors`" in text and "no_such_module" not in text
    assert len(notes) == 1 and "procgraph.no_such_module" in notes[0]


def test_a_name_without_docstring_is_reported(gen: ModuleType, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pg_api_probe.py").write_text(
        '"""A probe module."""\n\n\ndef documented() -> None:\n    """Yes."""\n\n\n'
        'def bare() -> None:\n    pass\n\n\nclass Thing:\n    def method(self) -> int:\n'
        '        return 1\n', encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, missing = gen.generate(("pg_api_probe",), note=lambda _: None)
    assert missing == ["pg_api_probe.bare", "pg_api_probe.Thing", "pg_api_probe.Thing.method"]
