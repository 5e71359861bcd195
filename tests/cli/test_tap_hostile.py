"""``procgraph tap`` and ``top`` on hostile entries: never crash, print only escaped text.

Issue 9 item 6: tap crashed on exactly the entries that end up in ``:dead`` and printed
``type``, keys and ``dead:*`` fields raw (terminal escapes and newlines passed through).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import redis
from rich.console import Console as RichConsole
from typer.testing import CliRunner

from procgraph.brokers import EmbeddedBroker
from procgraph.cli.main import app
from procgraph.cli.top_cmd import render
from procgraph.constants import line_counters_key
from procgraph.graph import load_graph
from procgraph.monitor import LineMonitor

STREAM = "pg:hostile:src:out"
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # all but \n


def _header(**over: Any) -> bytes:
    h: dict[str, Any] = {"v": 1, "type": "Reading", "type_version": 1, "id": "a-1", "key": "k",
                         "ts_ns": 1, "trace": [], "data": {"value": 1.0}}
    h.update(over)
    return json.dumps(h).encode()


def _tap(url: str, count: int) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["tap", STREAM, "--redis", url, "--from-start",
                                      "--count", str(count)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_item06_tap_shows_undecodable_entries_and_goes_on(valkey: EmbeddedBroker) -> None:
    """Issue 9 item 6: `arrays: [1]`, a non-object descriptor, a non-UTF-8 header and an
    entry without `h` are each shown as `<id> <undecodable: reason>`; tap goes on."""
    client = redis.Redis.from_url(valkey.url)
    bad = [
        {b"h": _header(arrays=[1])},
        {b"h": _header(arrays={"image": 1})},
        {b"h": b'{"v":1,"type":"Reading\xff\xfe","key":"k"}'},
        {b"x": b"no header at all"},
    ]
    ids = [client.xadd(STREAM, fields).decode() for fields in bad]  # type: ignore[arg-type]
    good = client.xadd(STREAM, {b"h": _header(key="after")}).decode()
    code, out = _tap(valkey.url, len(bad) + 1)
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == len(bad) + 1, out
    for entry_id, line in zip(ids, lines, strict=False):
        assert line.startswith(f"{entry_id} <undecodable: "), line
        assert line.endswith(">"), line
    assert lines[-1] == f"{good} Reading key='after' {{\"value\":1.0}}"


def test_item06_tap_escapes_type_key_and_dead_fields(valkey: EmbeddedBroker) -> None:
    """Issue 9 item 6: control characters and newlines in `type`, the key, array names and
    `dead:*` fields (names and values, non-UTF-8 too) are escaped and capped."""
    client = redis.Redis.from_url(valkey.url)
    fields = {
        b"h": _header(type="Reading\x1b[2J\nERROR forged", key="k\r\x1b]0;title\x07",
                      arrays={"im\nage": {"dtype": "|u1\x1b[31m", "shape": [2, 2],
                                          "encoding": "raw"}}),
        b"a:im\nage": b"\0\0\0\0",
        b"dead:reason": b"bad header \x1b[31mred\nERROR supervisor: forged " + b"r" * 5000,
        b"dead:stream\n\x1b": b"pg:x\xff\r",
    }
    entry = client.xadd(STREAM, fields).decode()  # type: ignore[arg-type]
    dead_only = client.xadd(STREAM, {b"dead:reason": b"no header\nERROR forged"}).decode()
    code, out = _tap(valkey.url, 2)
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert not CONTROL.search(out), repr(out)
    first = lines[0]
    assert first.startswith(f"{entry} Reading\\x1b[2J\\nERROR forged key="), first
    assert "dead:reason=bad header \\x1b[31mred\\nERROR supervisor: forged rrr" in first
    assert "...[cut, 5045 bytes in all]" in first
    assert "dead:stream\\n\\x1b=pg:x\\xff\\r" in first
    assert len(first) < 2000, len(first)
    assert lines[1].startswith(f"{dead_only} <undecodable: "), lines[1]
    assert lines[1].endswith(" dead:reason=no header\\nERROR forged"), lines[1]


def test_item06_top_escapes_line_counter_names(valkey: EmbeddedBroker, tmp_path: Any) -> None:
    """Issue 9 item 6: a line counter named with a newline, ESC or invalid UTF-8 (written by
    anyone with broker access) reaches `top` as one escaped name."""
    graph = tmp_path / "g.yaml"
    graph.write_text("name: hostile\nagents:\n  c: {class: \"procgraph.examples:Counter\"}\n")
    client = redis.Redis.from_url(valkey.url)
    client.hset(line_counters_key("hostile"), mapping={
        b"lost\nERROR forged\x1b[2J": 3, b"bad\xff": 1})
    with LineMonitor(load_graph(graph), {"main": valkey.url}) as monitor:
        counters = monitor.line_counters()
    assert counters == {"lost\\nERROR forged\\x1b[2J": 3, "bad\\xff": 1}


def test_item06_top_draws_hostile_counter_names_literally(tmp_path: Any) -> None:
    """Issue 9 item 6: a line counter named like rich markup (`[/foo]`, `[red]`) is drawn as
    text by `top`, not read as markup (a stray closing tag ended `top`)."""
    graph = tmp_path / "g.yaml"
    graph.write_text("name: hostile\nagents:\n  c: {class: \"procgraph.examples:Counter\"}\n")
    out = io.StringIO()
    table = render(load_graph(graph), [], plain=False,
                   counters={"[/foo]": 1, "[red]x\\x1b": 2})
    RichConsole(file=out, width=200, color_system=None).print(table)
    assert "[/foo]=1" in out.getvalue() and "[red]x\\x1b=2" in out.getvalue(), out.getvalue()
