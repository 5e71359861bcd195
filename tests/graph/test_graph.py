"""Loading process graphs: the compiled plan, and every error naming file, line and fix."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from procgraph.errors import GraphError
from procgraph.graph import GraphPlan, graph_json_schema, load_graph

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
TYPES_MODULE = "pgt_graph_types"
TYPES_SOURCE = '''
import numpy as np

from procgraph import Agent, Input, Message, Output


class Apple(Message):
    weight: float = 0.0


class GreenApple(Apple):
    sour: bool = True


class Pear(Message):
    ripe: bool = False


class Shot(Message):
    image: np.ndarray
    thumb: np.ndarray | None = None


class AppleTree(Agent):
    out = Output(Apple)

    def run(self) -> None:
        pass


class GreenTree(Agent):
    out = Output(GreenApple)

    def run(self) -> None:
        pass


class AppleEater(Agent):
    apples = Input(Apple)

    def on_apples(self, msg) -> None:
        pass


class GreenEater(Agent):
    apples = Input(GreenApple)

    def on_apples(self, msg) -> None:
        pass


class PearEater(Agent):
    pears = Input(Pear)

    def on_pears(self, msg) -> None:
        pass


class TwoBaskets(Agent):
    left = Input(Apple)
    right = Input(Apple, optional=True)

    def on_left(self, msg) -> None:
        pass

    def on_right(self, msg) -> None:
        pass


class Camera(Agent):
    shots = Output(Shot, encoding={"image": "jpeg"}, quality=70, maxlen=20)

    def run(self) -> None:
        pass


class Anything(Agent):
    class Params(Agent.Params):
        value: int | float | bool | str | None = None
        other: int | float | bool | str | None = None

    def run(self) -> None:
        pass


NotAnAgent = Apple
'''


@pytest.fixture
def gdir(tmp_path: Path) -> Iterator[Path]:
    """A folder with the test agents and a module of message types beside the graph."""
    saved_path = list(sys.path)
    sys.modules.pop(TYPES_MODULE, None)
    shutil.copy(TESTS / "pgtest_agents.py", tmp_path / "pgtest_agents.py")
    (tmp_path / f"{TYPES_MODULE}.py").write_text(TYPES_SOURCE)
    yield tmp_path
    sys.modules.pop(TYPES_MODULE, None)
    sys.path[:] = saved_path


@pytest.fixture
def load(gdir: Path) -> Callable[..., GraphPlan]:
    def loader(text: str, env: dict[str, str] | None = None, name: str = "graph.yaml"
               ) -> GraphPlan:
        file = gdir / name
        file.write_text(textwrap.dedent(text))
        return load_graph(file, env={} if env is None else env)

    return loader


@pytest.fixture
def fails(gdir: Path, load: Callable[..., GraphPlan]) -> Callable[..., str]:
    """Load a graph that must fail; check the message names file, line and a fix."""

    def check(text: str, line_of: str | None, *needles: str,
              env: dict[str, str] | None = None) -> str:
        text = textwrap.dedent(text)
        with pytest.raises(GraphError) as info:
            load(text, env)
        msg = str(info.value)
        file = gdir / "graph.yaml"
        assert str(file) in msg, msg
        if line_of is not None:
            matches = [i for i, ln in enumerate(text.splitlines(), 1) if line_of in ln]
            assert len(matches) == 1, f"test bug: {line_of!r} is on lines {matches}"
            assert f"{file}:{matches[0]}:" in msg, msg
        assert "\n  fix: " in msg, msg
        for needle in needles:
            assert needle in msg, f"{needle!r} not in:\n{msg}"
        assert "Traceback" not in msg
        return msg

    return check


# -- a good graph compiles -------------------------------------------------------------------
GOOD = """
name: line-1
description: every feature the compiler resolves
brokers:
  main: {}
  edge: {url: "redis://10.0.0.2:6379/0", node: cam}
agents:
  numbers:
    class: pgtest_agents:Numbers
    params: {count: 5}
    outputs:
      out: {maxlen: 50, max_mb: 2, stream: "custom:numbers"}
  other:
    class: pgtest_agents:Numbers
    broker: edge
    node: cam
  doubler:
    class: pgtest_agents:Doubler
    replicas: 3
    restart: on-failure
    inputs: {items: numbers.out}
  recorder:
    class: pgtest_agents:Recorder
    params: {poison: [k1, k2], slow_ms: 1}
    inputs:
      items: [doubler.out, {from: other.out, policy: latest}]
  preview:
    class: pgtest_agents:Recorder
    inputs: {items: {from: doubler.out, policy: latest, start: "0"}}
  batcher:
    class: pgtest_agents:BatchRecorder
    inputs: {items: {from: numbers.out, batch: 16, max_wait_ms: 7}}
  batcher2:
    class: pgtest_agents:BatchRecorder
    inputs: {items: doubler.out}
"""


def test_good_graph_compiles(load: Callable[..., GraphPlan]) -> None:
    plan = load(GOOD)
    assert plan.name == "line-1"
    assert list(plan.agents) == ["numbers", "other", "doubler", "recorder", "preview", "batcher",
                                 "batcher2"]
    assert plan.graph_dir == Path(plan.file).resolve().parent
    a = plan.agents
    # default stream keys; an explicit stream and caps
    assert [o.stream for o in a["doubler"].outputs] == ["pg:line-1:doubler:out"]
    assert [o.stream for o in a["other"].outputs] == ["pg:line-1:other:out"]
    num_out = a["numbers"].outputs[0]
    assert (num_out.stream, num_out.maxlen, num_out.max_bytes) == ("custom:numbers", 50, 2 * 2**20)
    # brokers: agent default, agent override; outputs live on their agent's broker
    assert (a["numbers"].broker, a["other"].broker) == ("main", "edge")
    assert a["other"].outputs[0].broker == "edge"
    assert a["other"].node == "cam"
    # readers and lossless groups per output
    dbl = a["doubler"].outputs[0]
    assert dbl.readers == ["recorder", "preview", "batcher2"]
    assert dbl.lossless_groups == ["recorder", "batcher2"]
    assert a["other"].outputs[0].readers == ["recorder"]
    assert a["other"].outputs[0].lossless_groups == []
    assert num_out.readers == ["doubler", "batcher"]
    # fan-in: one input port, two streams on two brokers, each with its own policy
    rec = a["recorder"].inputs
    assert [(i.port, i.stream, i.broker, i.source, i.policy) for i in rec] == [
        ("items", "pg:line-1:doubler:out", "main", "doubler.out", "lossless"),
        ("items", "pg:line-1:other:out", "edge", "other.out", "latest"),
    ]
    # params are validated and completed with the agent's defaults
    assert a["recorder"].params["slow_ms"] == 1.0
    assert a["recorder"].params["poison"] == ["k1", "k2"]
    assert a["recorder"].params["crash_at"] == -1
    assert (a["preview"].inputs[0].policy, a["preview"].inputs[0].start) == ("latest", "0")
    assert (a["doubler"].inputs[0].start, a["doubler"].replicas) == ("$", 3)
    assert a["doubler"].restart == "on-failure"
    # batch: the port's declaration, or the edge's override
    assert (a["batcher2"].inputs[0].batch, a["batcher2"].inputs[0].max_wait_ms) == (4, 50)
    assert (a["batcher"].inputs[0].batch, a["batcher"].inputs[0].max_wait_ms) == (16, 7)
    # params are validated and complete (defaults filled in)
    assert a["numbers"].params == {"count": 5, "rate_hz": 0.0, "payload_bytes": 0}
    # the plan is plain data: it survives JSON
    assert GraphPlan.model_validate_json(plan.model_dump_json()) == plan
    assert plan.agents_on("cam") == [a["other"]]
    assert len(plan.agents_on(None)) == 7


def test_output_overrides_and_declared_encodings(load: Callable[..., GraphPlan]) -> None:
    plan = load(f"""
        name: cams
        agents:
          plain: {{class: "{TYPES_MODULE}:Camera"}}
          tuned:
            class: {TYPES_MODULE}:Camera
            outputs:
              shots: {{encoding: {{image: png, thumb: jpeg}}, quality: 95, maxlen: 3}}
        """)
    plain, tuned = plan.agents["plain"].outputs[0], plan.agents["tuned"].outputs[0]
    assert (plain.encoding, plain.quality, plain.maxlen) == ({"image": "jpeg"}, 70, 20)
    assert (tuned.encoding, tuned.quality, tuned.maxlen) == (
        {"image": "png", "thumb": "jpeg"}, 95, 3)


def test_subclass_output_may_feed_a_base_class_input(load: Callable[..., GraphPlan]) -> None:
    plan = load(f"""
        name: orchard
        agents:
          tree: {{class: "{TYPES_MODULE}:GreenTree"}}
          eater: {{class: "{TYPES_MODULE}:AppleEater", inputs: {{apples: tree.out}}}}
        """)
    assert plan.agents["eater"].inputs[0].stream == "pg:orchard:tree:out"


def test_optional_input_may_stay_unwired(load: Callable[..., GraphPlan]) -> None:
    plan = load(f"""
        name: orchard
        agents:
          tree: {{class: "{TYPES_MODULE}:AppleTree"}}
          baskets: {{class: "{TYPES_MODULE}:TwoBaskets", inputs: {{left: tree.out}}}}
        """)
    assert [i.port for i in plan.agents["baskets"].inputs] == ["left"]


def test_minimal_example_graph() -> None:
    plan = load_graph(ROOT / "graphs" / "minimal.yaml", env={})
    assert plan.brokers["main"].url == "embedded"
    assert plan.agents["counter"].outputs[0].stream == "pg:minimal:counter:out"
    assert plan.agents["scale"].replicas == 2
    assert plan.agents["printer"].inputs[0].stream == "pg:minimal:scale:scaled"
    assert plan.agents["counter"].params == {"rate_hz": 50.0, "count": 0}
    env = {"PROCGRAPH_REDIS": "redis://127.0.0.1:7777/0"}
    assert load_graph(ROOT / "graphs" / "minimal.yaml", env=env).brokers["main"].url == env[
        "PROCGRAPH_REDIS"]


# -- errors: file, line and a fix ------------------------------------------------------------
def test_invalid_yaml(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          a: {class: x
          b: [1, 2
        """, "b: [1, 2", "not valid YAML")


def test_bad_indentation(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          a:
            class: x
           params: {}
        """, "params: {}", "not valid YAML")


def test_duplicate_key_points_at_the_second(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          numbers: {class: "pgtest_agents:Numbers"}
          other: {class: "pgtest_agents:Numbers"}
          numbers: {class: "pgtest_agents:Doubler"}
        """, 'numbers: {class: "pgtest_agents:Doubler"}', "duplicate key 'numbers'")


def test_unknown_top_level_key(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        brokerz: {main: {}}
        agents:
          n: {class: "pgtest_agents:Numbers"}
        """, "brokerz", "brokerz", "did you mean 'brokers'?")


def test_unknown_agent_key_suggests_the_right_one(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents:Numbers
            replica: 2
        """, "replica: 2", "agents.n.replica", "did you mean 'replicas'?")


def test_missing_class(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          numbers:
            params: {count: 1}
        """, "numbers:", "agents.numbers.class", "add 'class' to agents.numbers")


def test_missing_agents(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        brokers: {main: {}}
        """, "name: t", "agents", "add 'agents'")


def test_bad_import_path(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents.Numbers
        """, "class: pgtest_agents.Numbers", "is not an import path", "module:ClassName")


def test_module_not_found(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgt_no_such_module_here:Numbers
        """, "class: pgt_no_such", "cannot import module 'pgt_no_such_module_here'",
          "beside the graph file")


def test_class_missing_in_module_lists_the_agents(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents:Numbrs
        """, "Numbrs", "has no 'Numbrs'", "Numbers", "Recorder")


def test_class_that_is_not_an_agent(fails: Callable[..., str]) -> None:
    fails(f"""
        name: t
        agents:
          n:
            class: {TYPES_MODULE}:NotAnAgent
        """, "NotAnAgent", "not a procgraph.Agent subclass", "subclasses procgraph.Agent")


def test_module_that_fails_to_import(gdir: Path, fails: Callable[..., str]) -> None:
    (gdir / "pgt_broken_module.py").write_text("raise RuntimeError('boom at import')\n")
    try:
        fails("""
            name: t
            agents:
              n:
                class: pgt_broken_module:X
            """, "pgt_broken_module", "boom at import", "python -c 'import pgt_broken_module'")
    finally:
        sys.modules.pop("pgt_broken_module", None)


def _write(gdir: Path, text: str) -> Path:
    file = gdir / "graph.yaml"
    file.write_text(textwrap.dedent(text))
    return file


def test_param_of_the_wrong_type(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents:Numbers
            params:
              count: 3
              rate_hz: fast
        """, "rate_hz: fast", "params of agent 'n'", "agents.n.params.rate_hz",
          "valid number")


def test_unknown_param_suggests_the_right_one(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents:Numbers
            params:
              cuont: 3
        """, "cuont", "agents.n.params.cuont", "did you mean 'count'?")


def test_unknown_input_port(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:Recorder
            inputs:
              item: n.out
        """, "item: n.out", "has no input 'item'", "inputs: items")


def test_inputs_on_a_source(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          m:
            class: pgtest_agents:Numbers
            inputs: {items: n.out}
        """, "inputs: {items: n.out}", "has no input 'items'", "it is a source")


def test_unknown_source_agent(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:Recorder
            inputs:
              items: nn.out
        """, "items: nn.out", "'nn.out' does not name an agent's output", "agents: n, r")


def test_source_without_port(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:Recorder
            inputs:
              items: n
        """, "items: n", "write agent.port")


def test_unknown_source_port(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:Recorder
            inputs:
              items: n.output
        """, "items: n.output", "agent 'n' has no output 'output'", "outputs of n: out")


def test_unknown_output_override(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents:Numbers
            outputs:
              outt: {maxlen: 3}
        """, "outt:", "has no output 'outt'", "outputs: out")


def test_encoding_override_for_a_field_that_is_not_an_array(fails: Callable[..., str]) -> None:
    fails(f"""
        name: t
        agents:
          cam:
            class: {TYPES_MODULE}:Camera
            outputs:
              shots:
                encoding:
                  imgae: png
        """, "imgae: png", "has no array field 'imgae'", "array fields: image, thumb")


def test_type_mismatch_names_both_ends(fails: Callable[..., str]) -> None:
    fails(f"""
        name: t
        agents:
          tree: {{class: "{TYPES_MODULE}:AppleTree"}}
          eater:
            class: {TYPES_MODULE}:PearEater
            inputs:
              pears: tree.out
        """, "pears: tree.out", "type mismatch", "tree.out sends Apple/v1",
          "eater.pears expects Pear/v1", "subclass")


def test_base_class_output_may_not_feed_a_subclass_input(fails: Callable[..., str]) -> None:
    fails(f"""
        name: t
        agents:
          tree: {{class: "{TYPES_MODULE}:AppleTree"}}
          eater:
            class: {TYPES_MODULE}:GreenEater
            inputs:
              apples: tree.out
        """, "apples: tree.out", "sends Apple/v1", "expects GreenApple/v1")


def test_type_mismatch_inside_a_fan_in_list(fails: Callable[..., str]) -> None:
    fails(f"""
        name: t
        agents:
          apples: {{class: "{TYPES_MODULE}:AppleTree"}}
          numbers: {{class: "pgtest_agents:Numbers"}}
          eater:
            class: {TYPES_MODULE}:AppleEater
            inputs:
              apples: [apples.out, numbers.out]
        """, "apples: [apples.out", "numbers.out sends Item/v1")


def test_unwired_required_input(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          recorder:
            class: pgtest_agents:Recorder
        """, "recorder:", "input 'items' of recorder is not wired",
          "inputs: {items: <agent>.<output>}")


def test_one_agent_reading_one_stream_twice(fails: Callable[..., str]) -> None:
    fails(f"""
        name: t
        agents:
          tree: {{class: "{TYPES_MODULE}:AppleTree"}}
          baskets:
            class: {TYPES_MODULE}:TwoBaskets
            inputs:
              left: tree.out
              right: tree.out
        """, "right: tree.out", "already reads tree.out", "fan out")


def test_batch_override_on_an_unbatched_input(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:Recorder
            inputs:
              items: {from: n.out, batch: 8}
        """, "items: {from: n.out, batch: 8}", "r.items is not a batched input", "remove batch")


def test_batch_override_out_of_range(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:BatchRecorder
            inputs:
              items: {from: n.out, batch: 0}
        """, "items: {from: n.out", "greater than or equal to 1")


def test_unknown_edge_key(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n: {class: "pgtest_agents:Numbers"}
          r:
            class: pgtest_agents:Recorder
            inputs:
              items: {from: n.out, polcy: latest}
        """, "polcy", "did you mean 'policy'?")


def test_unknown_broker_of_an_agent(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        brokers: {main: {}, cam: {}}
        agents:
          n:
            class: pgtest_agents:Numbers
            broker: edge
        """, "broker: edge", "unknown broker 'edge'", "brokers defined: main, cam")


def test_unknown_broker_of_an_output(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        agents:
          n:
            class: pgtest_agents:Numbers
            outputs:
              out: {broker: edge}
        """, "out: {broker: edge}", "unknown broker 'edge'", "brokers defined: main")


def test_no_broker_at_all(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        brokers: {}
        agents:
          n: {class: "pgtest_agents:Numbers"}
        """, "brokers: {}", "no broker defined")


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "", "embeded"])
def test_bad_broker_url(fails: Callable[..., str], url: str) -> None:
    fails(f"""
        name: t
        brokers:
          main:
            url: "{url}"
        agents:
          n: {{class: "pgtest_agents:Numbers"}}
        """, "url:", "brokers.main.url", "redis://host:port")


def test_unset_variable(fails: Callable[..., str]) -> None:
    fails("""
        name: t
        brokers:
          main: {url: "${PGT_BROKER_URL}"}
        agents:
          n: {class: "pgtest_agents:Numbers"}
        """, "PGT_BROKER_URL", "environment variable PGT_BROKER_URL is not set",
          "export PGT_BROKER_URL=", "${PGT_BROKER_URL:-default}", env={"OTHER": "1"})


@pytest.mark.parametrize("name", ["bad name", "pg:x", "1st", "-x", "x.y", "é"])
def test_invalid_graph_name(fails: Callable[..., str], name: str) -> None:
    fails(f"""
        name: "{name}"
        agents:
          n: {{class: "pgtest_agents:Numbers"}}
        """, "name: ", "is not a valid name", "letters, digits")


@pytest.mark.parametrize("name", ["bad name", "n:x", "1st", "x.y"])
def test_invalid_agent_name(fails: Callable[..., str], name: str) -> None:
    fails(f"""
        name: t
        agents:
          "{name}": {{class: "pgtest_agents:Numbers"}}
        """, f'"{name}"', f"agent name {name!r} is not valid", "letters, digits")


def test_graph_that_is_not_a_mapping(load: Callable[..., GraphPlan], gdir: Path) -> None:
    for text in ("- a\n- b\n", "", "just text\n"):
        with pytest.raises(GraphError, match="a graph is a mapping") as info:
            load(text)
        assert str(gdir / "graph.yaml") in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GraphError, match="cannot read the graph file") as info:
        load_graph(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('!!python/object/apply:os.system ["touch pwned"]', "unsupported tag"),
        ("!!python/name:os.system x", "cannot read this value"),
        ("!custom {a: 1}", "unsupported tag"),
        ("!!int abc", "cannot read this value"),
        ("!!bool maybe", "cannot read this value"),
        ("!!float x", "cannot read this value"),
    ],
)
def test_yaml_tags_are_refused_never_executed(fails: Callable[..., str], gdir: Path,
                                              value: str, needle: str) -> None:
    fails(f"""
        name: t
        description: {value}
        agents:
          n: {{class: "pgtest_agents:Numbers"}}
        """, "description:", needle)
    assert not (gdir / "pwned").exists()


def test_merge_keys_share_settings(load: Callable[..., GraphPlan]) -> None:
    plan = load("""
        name: t
        agents:
          a: &common {class: "pgtest_agents:Numbers", replicas: 2, params: {count: 3}}
          b:
            <<: *common
            params: {count: 4}
        """)
    assert (plan.agents["b"].replicas, plan.agents["b"].params["count"]) == (2, 4)


# -- ${VAR} ----------------------------------------------------------------------------------
ENV_GRAPH = f"""
name: ${{PGT_NAME:-envgraph}}
agents:
  a:
    class: {TYPES_MODULE}:Anything
    params:
      value: ${{PGT_VALUE}}
      other: "${{PGT_VALUE}}"
"""


@pytest.mark.parametrize(
    ("value", "plain", "quoted"),
    [
        ("7", 7, "7"),
        ("2.5", 2.5, "2.5"),
        ("-3", -3, "-3"),
        ("true", True, "true"),
        ("hello", "hello", "hello"),
        ("a: b", "a: b", "a: b"),  # a variable cannot inject a mapping
        ("[1, 2]", "[1, 2]", "[1, 2]"),  # ... nor a list
        ("x #y", "x #y", "x #y"),  # ... nor lose text after '#'
        ("", "", ""),
    ],
)
def test_variables_expand_and_numbers_become_numbers(
    load: Callable[..., GraphPlan], value: str, plain: Any, quoted: str
) -> None:
    plan = load(ENV_GRAPH, env={"PGT_VALUE": value})
    params = plan.agents["a"].params
    assert params["value"] == plain and type(params["value"]) is type(plain)
    assert params["other"] == quoted and type(params["other"]) is str
    assert plan.name == "envgraph"


def test_variable_defaults(load: Callable[..., GraphPlan]) -> None:
    plan = load(f"""
        name: ${{PGT_NAME:-fallback}}
        agents:
          a:
            class: {TYPES_MODULE}:Anything
            params:
              value: "${{PGT_V:-3}}"
              other: ${{PGT_V:-3}}
          b:
            class: {TYPES_MODULE}:Anything
            params: {{value: "id-${{PGT_ID:-0}}-${{PGT_NAME:-x}}"}}
        """, env={"PGT_NAME": ""})
    assert plan.name == "fallback"  # an empty variable takes the default
    assert plan.agents["a"].params == {"value": "3", "other": 3}
    assert plan.agents["b"].params["value"] == "id-0-x"


def test_set_variable_wins_over_default(load: Callable[..., GraphPlan]) -> None:
    plan = load(f"""
        name: ${{PGT_NAME:-fallback}}
        brokers:
          main: {{url: "${{PGT_URL:-embedded}}"}}
        agents:
          a:
            class: {TYPES_MODULE}:Anything
            replicas: ${{PGT_REPLICAS:-1}}
        """, env={"PGT_NAME": "fromenv", "PGT_URL": "redis://h:1/0", "PGT_REPLICAS": "4"})
    assert (plan.name, plan.brokers["main"].url, plan.agents["a"].replicas) == (
        "fromenv", "redis://h:1/0", 4)


def test_variable_giving_an_invalid_name_is_reported(fails: Callable[..., str]) -> None:
    fails("""
        name: ${PGT_NAME}
        agents:
          n: {class: "pgtest_agents:Numbers"}
        """, "name: ${PGT_NAME}", "'a b' is not a valid name", env={"PGT_NAME": "a b"})


# -- JSON schema -----------------------------------------------------------------------------
def test_graph_json_schema() -> None:
    schema = graph_json_schema()
    json.dumps(schema)  # plain JSON
    text = json.dumps(schema)
    assert '"class"' in text
    agent_def = next(d for n, d in schema["$defs"].items() if n == "AgentSpec")
    assert "class" in agent_def["properties"]
    assert "class" in agent_def["required"]
    assert agent_def.get("additionalProperties") is False
    assert set(schema["required"]) >= {"name", "agents"}
    jsonschema = pytest.importorskip("jsonschema")
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    good = yaml.safe_load((ROOT / "graphs" / "minimal.yaml").read_text())
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors(yaml.safe_load(GOOD))) == []
    bad = {"name": "t", "agents": {"n": {"class": "m:C", "replica": 2}}}
    assert any("replica" in e.message for e in validator.iter_errors(bad))
    assert list(validator.iter_errors({"name": "t", "agents": {"n": {"params": {}}}}))
