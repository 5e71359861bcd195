"""onnxruntime threading of the classifier: the rule that derives it from the CPUs and the
replicas on the node, the session options it gives, and the placement facts the runner puts
in the AgentContext."""

from __future__ import annotations

from pathlib import Path

import pytest
from procgraph.agents.classifier import OnnxClassifier
from procgraph.agents.classifier.session import Threading

from procgraph.context import AgentContext, usable_cpus
from procgraph.graph import load_graph
from procgraph.runtime import AgentRunner


def _choose(cpus: int, on_node: int, classifiers: int, **params: object) -> Threading:
    p = OnnxClassifier.Params.model_validate({"model": "m.onnx", **params})
    ctx = AgentContext(cpus=cpus, replicas_on_node=on_node, class_replicas_on_node=classifiers)
    return p.threading(ctx)


@pytest.mark.parametrize(("cpus", "on_node", "classifiers", "intra"), [
    (2, 7, 2, 1),    # the inspection line on 2 cores: one thread each
    (2, 4, 1, 1),    # one classifier and three other agents on 2 cores
    (16, 7, 2, 7),   # 15 cores left for 2 classifiers
    (8, 2, 2, 4),    # two classifiers alone on 8 cores
])
def test_a_line_shares_the_cpus_and_does_not_spin(cpus: int, on_node: int, classifiers: int,
                                                  intra: int) -> None:
    t = _choose(cpus, on_node, classifiers)
    assert (t.intra_op_threads, t.inter_op_threads, t.allow_spinning) == (intra, 1, False)


def test_alone_on_its_node_onnxruntime_keeps_its_defaults() -> None:
    assert _choose(8, 1, 1) == Threading(0, 0, None, False)


def test_params_win_over_the_derived_values() -> None:
    t = _choose(2, 7, 2, intra_op_threads=0, allow_spinning=True, inter_op_threads=3,
                execution_mode="parallel")
    assert t == Threading(0, 3, True, True)


def test_the_session_options_carry_the_choice() -> None:
    opts = Threading(intra_op_threads=3, inter_op_threads=2, allow_spinning=False,
                     parallel=True).options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert str(opts.execution_mode).endswith("ORT_PARALLEL")
    assert "spinning off" in Threading(1, 1, False).describe()


def test_usable_cpus_is_at_least_one_and_at_most_the_machine() -> None:
    import os

    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


def test_the_runner_tells_the_agent_what_runs_on_its_node(valkey, tmp_path: Path) -> None:
    graph = tmp_path / "place.yaml"
    graph.write_text(
        "name: place\nbrokers: {main: {url: embedded}}\nagents:\n"
        '  cam: {class: "procgraph.agents.camera:SyntheticPartCamera", node: a}\n'
        "  clf:\n"
        '    class: "procgraph.agents.classifier:OnnxClassifier"\n'
        "    node: a\n    replicas: 2\n"
        '    params: {model: "missing.onnx"}\n'
        "    inputs: {frames: cam.frames}\n"
        "  other:\n"
        '    class: "procgraph.agents.classifier:OnnxClassifier"\n'
        "    node: b\n"
        '    params: {model: "missing.onnx"}\n'
        "    inputs: {frames: cam.frames}\n")
    runner = AgentRunner(load_graph(graph), "clf", 1, {"main": valkey.url})
    ctx = runner.agent.context
    assert (ctx.replicas_on_node, ctx.class_replicas_on_node) == (3, 2)
    assert ctx.cpus == usable_cpus()
    t = runner.agent.params.threading(ctx)
    assert t.allow_spinning is False and t.intra_op_threads >= 1
