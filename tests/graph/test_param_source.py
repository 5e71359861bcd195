"""Issue 10 item 7: a bad value that came from ``${VAR}`` names the variable, its value,
the file and the line (``agents.hmi.params.port: '80x' from $HMI_PORT in x.yaml line 7``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from procgraph.errors import GraphError
from procgraph.graph import load_graph
from procgraph.yamlmarks import load_marked

GRAPH = """\
name: src
brokers:
  main: {url: embedded}
agents:
  counter:
    class: "procgraph.examples:Counter"
    params:
      rate_hz: ${RATE}
  scale:
    class: "procgraph.examples:Scale"
    inputs: {readings: counter.out}
    replicas: ${REPLICAS:-1}
    broker: "${BROKER:-main}"
"""


def _error(tmp_path: Path, env: dict[str, str], text: str = GRAPH) -> str:
    file = tmp_path / "x.yaml"
    file.write_text(text)
    with pytest.raises(GraphError) as info:
        load_graph(file, env=env)
    return str(info.value)


def test_a_param_from_a_variable_names_it_its_value_and_the_line(tmp_path: Path) -> None:
    message = _error(tmp_path, {"RATE": "80x"})
    assert f"agents.counter.params.rate_hz: '80x' from $RATE in {tmp_path / 'x.yaml'} line 8: " \
           "Input should be a valid number" in message, message
    assert "fix: correct $RATE" in message


def test_a_default_that_does_not_fit_says_it_was_the_default(tmp_path: Path) -> None:
    message = _error(tmp_path, {}, GRAPH.replace("${RATE}", "${RATE:-fast}"))
    assert "rate_hz: 'fast' from the default of ${RATE:-...} in" in message, message


def test_graph_keys_and_marked_errors_name_the_variable_too(tmp_path: Path) -> None:
    message = _error(tmp_path, {"RATE": "5", "REPLICAS": "two"})
    assert "agents.scale.replicas: 'two' from $REPLICAS in" in message and "line 12" in message
    message = _error(tmp_path, {"RATE": "5", "BROKER": "nob"})
    assert message.startswith(f"{tmp_path / 'x.yaml'}:13: agents.scale.broker: 'nob' from "
                              "$BROKER: unknown broker 'nob'"), message


def test_values_written_in_the_file_keep_the_plain_message(tmp_path: Path) -> None:
    message = _error(tmp_path, {}, GRAPH.replace("${RATE}", "80x"))
    assert f"{tmp_path / 'x.yaml'}:8: agents.counter.params.rate_hz: Input should be" in message
    assert " from $" not in message


def test_several_variables_and_hostile_values(tmp_path: Path) -> None:
    file = tmp_path / "m.yaml"
    file.write_text('a: "${HOST}:${PORT}"\n"${K}": 1\nb: plain\n')
    marked = load_marked(file, {"HOST": "h", "PORT": "1\x1b[2J", "K": "key"})
    assert marked.source_of(("a",)) == "$HOST and $PORT"
    assert marked.source_of(("b",)) is None and marked.source_of(()) is None  # a key: no value
    described = marked.describe(("a",), marked.data["a"])
    assert "\x1b" not in described and "from $HOST and $PORT in" in described
    # a good value from a variable loads as before
    ok = tmp_path / "ok.yaml"
    ok.write_text(GRAPH)
    plan = load_graph(ok, env={"RATE": "7", "REPLICAS": "2"})
    assert plan.agents["counter"].params["rate_hz"] == 7 and plan.agents["scale"].replicas == 2
