"""procgraph.brokers.resolve_broker_urls: the one place a broker's URL is decided."""

from __future__ import annotations

from pathlib import Path

import pytest

from procgraph.brokers import resolve_broker_urls
from procgraph.errors import BrokerError
from procgraph.graph import BrokerSpec, GraphPlan, load_graph

GRAPH = """
name: urls
brokers:
  ext: {url: "redis://db.example:6379"}
  fixed: {url: embedded, host: 10.0.0.5, port: 6400, node: a}
  free: {url: embedded, node: b}
agents:
  counter: {class: "procgraph.examples:Counter", broker: ext}
"""


@pytest.fixture
def plan(tmp_path: Path) -> GraphPlan:
    (tmp_path / "g.yaml").write_text(GRAPH)
    return load_graph(tmp_path / "g.yaml")


def test_an_embedded_broker_on_a_free_port_needs_a_url(plan: GraphPlan) -> None:
    with pytest.raises(BrokerError, match=r"'free'.*pass --redis URL"):
        resolve_broker_urls(plan)


def test_rules_in_order(plan: GraphPlan) -> None:
    given = {"ext": "redis://given:1", "fixed": "redis://given:2", "free": "redis://given:3"}
    # the graph's explicit URL wins over what a parent gives; fixed ports over nothing
    assert resolve_broker_urls(plan, given=given) == {
        "ext": "redis://db.example:6379", "fixed": "redis://given:2", "free": "redis://given:3"}
    # --redis (override) wins over the parent's URLs for every embedded broker
    assert resolve_broker_urls(plan, "redis://over:9", given=given) == {
        "ext": "redis://db.example:6379", "fixed": "redis://over:9", "free": "redis://over:9"}
    # an explicit per-broker URL (--broker NAME=URL) wins over everything
    assert resolve_broker_urls(plan, "redis://over:9", brokers={"ext": "redis://b:1"},
                               given=given)["ext"] == "redis://b:1"
    # without anything else, an embedded broker's fixed host and port
    assert resolve_broker_urls(plan, given={"free": "redis://given:3"})["fixed"] == \
        "redis://10.0.0.5:6400"


def test_a_supervisor_starts_what_its_node_owns(plan: GraphPlan) -> None:
    started: list[str] = []

    def start_on_a(name: str, spec: BrokerSpec) -> str | None:
        if spec.node != "a":
            return None
        started.append(name)
        return "redis://127.0.0.1:7777"

    with pytest.raises(BrokerError, match="'free' is embedded on node 'b': give it a fixed port"):
        resolve_broker_urls(plan, start=start_on_a)

    def start_all(name: str, spec: BrokerSpec) -> str | None:
        return f"redis://127.0.0.1/{name}"

    urls = resolve_broker_urls(plan, start=start_all)
    assert urls == {"ext": "redis://db.example:6379", "fixed": "redis://127.0.0.1/fixed",
                    "free": "redis://127.0.0.1/free"}
    assert started == ["fixed"]
