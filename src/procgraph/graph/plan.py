"""The compiled plan of a validated graph: what the supervisor and each replica act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from procgraph.graph.spec import (
    BrokerSpec,
    LogsSpec,
    MetricsSpec,
    ResourcesSpec,
    _Strict,
)


class InputPlan(_Strict):
    """A stream an input port reads, resolved."""

    port: str
    stream: str
    broker: str
    source: str  # "agent.port"
    policy: Literal["lossless", "latest"]
    start: Literal["$", "0"]
    batch: int
    max_wait_ms: float


class OutputPlan(_Strict):
    """An output port's stream, resolved, with the groups that must not lose entries."""

    port: str
    stream: str
    broker: str
    maxlen: int
    max_bytes: int
    encoding: dict[str, str]
    quality: int
    lossless_groups: list[str]
    readers: list[str]
    #: large raw arrays through shared memory where every reader is on this host
    shm: bool = True
    #: the size of each replica's ring for this port, MiB
    shm_mb: float = 64.0


class AgentPlan(_Strict):
    """Everything a replica needs to run, resolved from the graph."""

    name: str
    class_path: str
    params: dict[str, Any]
    replicas: int
    node: str | None
    broker: str
    restart: str
    max_deliveries: int
    claim_idle_ms: int
    heartbeat_timeout_s: float
    log_level: str | None = None
    #: "process" or "docker"; None: the supervisor's default (procgraph run --runtime)
    runtime: str | None = None
    image: str | None = None
    devices: list[str] = Field(default_factory=list)
    network: str | None = None
    resources: ResourcesSpec | None = None
    inputs: list[InputPlan]
    outputs: list[OutputPlan]


class GraphPlan(_Strict):
    """A validated graph: what the supervisor and each replica act on."""

    name: str
    file: str
    brokers: dict[str, BrokerSpec]
    agents: dict[str, AgentPlan]
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    logs: LogsSpec = Field(default_factory=LogsSpec)

    @property
    def graph_dir(self) -> Path:
        """Folder of the graph file (agent modules and relative paths resolve here)."""
        return Path(self.file).resolve().parent

    def agents_on(self, node: str | None) -> list[AgentPlan]:
        """Agents placed on ``node`` (all agents when node is None)."""
        return [a for a in self.agents.values() if node is None or a.node == node]
