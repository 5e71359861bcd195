"""The process graph file's schema: what a YAML graph may say (pydantic, extra keys forbidden)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from procgraph.constants import (
    DEFAULT_CLAIM_IDLE_MS,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_MAX_DELIVERIES,
    EMBEDDED,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersistenceSpec(_Strict):
    """How an embedded broker keeps its data on disk: an append-only file (AOF)."""

    appendfsync: Literal["everysec", "always", "no"] = Field("everysec", description=(
        "when the AOF reaches the disk: every second, every write, or when the OS flushes"))


class BrokerSpec(_Strict):
    """A named Redis-protocol server; ``embedded`` means the supervisor starts Valkey."""

    url: str = EMBEDDED
    node: str | None = Field(None, description="node that starts an embedded broker")
    host: str = Field("127.0.0.1", description="address an embedded broker binds/advertises")
    port: int | None = Field(None, description="port of an embedded broker (default: free)")
    persistence: PersistenceSpec | None = Field(default_factory=PersistenceSpec, description=(
        "an embedded broker's AOF {appendfsync: everysec|always|no}, or 'none' (in memory)"))
    data_dir: str | None = Field(None, description="an embedded broker's data folder (default "
                                 "<state folder>/brokers/<name>; relative to the graph file)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != EMBEDDED and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be 'embedded' or a redis://host:port URL")
        return v

    @field_validator("persistence", mode="before")
    @classmethod
    def _persistence(cls, v: object) -> object:
        if v is None or v == "none":  # None: a plan's JSON round trip
            return None
        if not isinstance(v, dict | PersistenceSpec):
            raise ValueError("must be 'none' or {appendfsync: everysec|always|no}")
        return v

    @model_validator(mode="after")
    def _embedded_only(self) -> BrokerSpec:
        for key, given in (("persistence", self.persistence != PersistenceSpec()),
                           ("data_dir", self.data_dir is not None)):
            if given and self.url != EMBEDDED:
                raise ValueError(f"{key} applies to an embedded broker only; for a server at "
                                 f"{self.url} turn on its own persistence (appendonly yes)")
        if self.data_dir is not None and self.persistence is None:
            raise ValueError("data_dir is set but persistence is 'none': remove one of them")
        return self


class EdgeSpec(_Strict):
    """One wire into an input port: ``from: agent.port`` plus delivery options."""

    from_: str = Field(alias="from")
    policy: Literal["lossless", "latest"] | None = None
    start: Literal["$", "0"] = "$"
    batch: int | None = Field(None, ge=1, le=4096, description="override the port's batch")
    max_wait_ms: float | None = Field(None, ge=0, description="override the port's max wait")


class OutputSpec(_Strict):
    """Graph-level overrides for an output port's stream."""

    stream: str | None = None
    broker: str | None = None
    maxlen: int | None = Field(None, ge=1)
    max_mb: float | None = Field(None, gt=0)
    encoding: dict[str, Literal["raw", "jpeg", "png"]] | None = None
    quality: int | None = Field(None, ge=1, le=100)


class AgentSpec(_Strict):
    """One agent of the graph."""

    class_: str = Field(alias="class", description="import path module:Class")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | EdgeSpec | list[str | EdgeSpec]] = Field(default_factory=dict)
    outputs: dict[str, OutputSpec] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1, le=64)
    node: str | None = None
    broker: str | None = None
    restart: Literal["always", "on-failure", "never"] = "always"
    max_deliveries: int = Field(DEFAULT_MAX_DELIVERIES, ge=1)
    claim_idle_ms: int = Field(DEFAULT_CLAIM_IDLE_MS, ge=100)
    heartbeat_timeout_s: float = Field(DEFAULT_HEARTBEAT_TIMEOUT_S, gt=0)


class GraphSpec(_Strict):
    """The whole YAML file."""

    name: str
    description: str = ""
    brokers: dict[str, BrokerSpec] = Field(default_factory=lambda: {"main": BrokerSpec()})
    agents: dict[str, AgentSpec]
