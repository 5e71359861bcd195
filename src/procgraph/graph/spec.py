"""The process graph file's schema: what a YAML graph may say (pydantic, extra keys forbidden)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from procgraph.constants import (
    DEFAULT_CLAIM_IDLE_MS,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_MAX_DELIVERIES,
    EMBEDDED,
)
from procgraph.redact import redact_url

#: the log levels a graph or ``--log-level`` may give (case-insensitive on the command line)
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersistenceSpec(_Strict):
    """How an embedded broker keeps its data on disk: an append-only file (AOF)."""

    appendfsync: Literal["everysec", "always", "no"] = Field("everysec", description=(
        "when the AOF reaches the disk: every second, every write, or when the OS flushes"))


class TlsSpec(_Strict):
    """How a client reaches a ``rediss://`` broker: the CA to trust, a client certificate.

    Paths are relative to the graph file's folder. ``insecure: true`` turns certificate
    checks off (``ssl_cert_reqs=none``): anyone in the path can then read and forge traffic.
    """

    ca: str | None = Field(None, description="PEM file of the CA(s) that signed the broker's "
                           "certificate (default: the system's CAs)")
    cert: str | None = Field(None, description="PEM client certificate (when the broker "
                             "asks for one: tls-auth-clients)")
    key: str | None = Field(None, description="PEM private key of the client certificate")
    insecure: bool = Field(False, description="do not check the broker's certificate")

    @model_validator(mode="after")
    def _pair(self) -> TlsSpec:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: give both or neither")
        return self


#: URL query options that turn a rediss:// broker's certificate check off
_INSECURE_QUERY = {"ssl_cert_reqs": ("none", "optional"), "ssl_check_hostname": ("false", "0",
                                                                             "no", "n", "f")}


class BrokerSpec(_Strict):
    """A named Redis-protocol server; ``embedded`` means the supervisor starts Valkey.

    ``password`` (write ``${VAR}`` to keep it out of the file) and ``username`` are sent to
    the broker by every client of the line; an embedded broker is started with that password.
    ``tls`` applies to ``rediss://`` brokers (the bundled Valkey has no TLS).
    """

    url: str = EMBEDDED
    node: str | None = Field(None, description="node that starts an embedded broker")
    host: str = Field("127.0.0.1", description="address an embedded broker binds/advertises")
    port: int | None = Field(None, description="port of an embedded broker (default: free)")
    persistence: PersistenceSpec | None = Field(default_factory=PersistenceSpec, description=(
        "an embedded broker's AOF {appendfsync: everysec|always|no}, or 'none' (in memory)"))
    data_dir: str | None = Field(None, description="an embedded broker's data folder (default "
                                 "<state folder>/brokers/<name>; relative to the graph file)")
    password: str | None = Field(None, min_length=1, description=(
        "the broker's password (write ${VAR}); an embedded broker not on loopback without one "
        "gets a generated password kept in the state folder"))
    username: str | None = Field(None, min_length=1, description="ACL user (default: default)")
    tls: TlsSpec | None = Field(None, description="{ca, cert, key, insecure} for a rediss:// "
                                "broker; paths relative to the graph file")

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
                                 f"{redact_url(self.url)} turn on its own persistence "
                                 "(appendonly yes)")
        if self.data_dir is not None and self.persistence is None:
            raise ValueError("data_dir is set but persistence is 'none': remove one of them")
        self._check_secrets()
        return self

    def _check_secrets(self) -> None:
        parts = urlsplit(self.url) if self.url != EMBEDDED else None
        if parts is not None and parts.password and self.password is not None:
            raise ValueError("the password is given twice (in url and in password): keep "
                             "password: ${VAR} and take it out of the URL")
        if self.url == EMBEDDED and self.username is not None:
            raise ValueError("username applies to a server at a redis:// url; an embedded "
                             "broker has the default user only (give password:)")
        if self.tls is not None and (parts is None or parts.scheme != "rediss"):
            where = "the bundled Valkey has no TLS: run a TLS broker and give its" \
                if parts is None else "tls needs a"
            raise ValueError(f"{where} rediss://host:port url")
        query = parse_qs(parts.query) if parts is not None else {}
        for key, values in _INSECURE_QUERY.items():
            if any(v.lower() in values for v in query.get(key, [])) and not (
                    self.tls is not None and self.tls.insecure):
                raise ValueError(f"{key}={query[key][0]} turns the broker's certificate check "
                                 "off: anyone in between can read and forge messages. Give "
                                 "the broker's CA (tls: {ca: ca.pem}) or, knowingly, set "
                                 "tls: {insecure: true}")


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
    shm: bool | None = Field(None, description=(
        "large raw arrays through shared memory when every reader runs on this host as a "
        "process (default: the graph's shm, on); false: always inline in the stream"))
    shm_mb: float | None = Field(None, gt=0, le=65536, description=(
        "size of each replica's shared-memory ring for this port in MiB (default 64)"))


class ResourcesSpec(_Strict):
    """Limits of one replica's container (``runtime: docker``)."""

    cpus: float | None = Field(None, gt=0, le=1024, description="CPU cores (0.5: half a core)")
    memory_mb: int | None = Field(None, ge=6, le=4_194_304, description=(
        "memory limit in MiB; the container is killed (exit 137) beyond it"))


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
    log_level: LogLevel | None = Field(None, description=(
        "this agent's log level (default: procgraph run --log-level, info)"))
    runtime: Literal["process", "docker"] | None = Field(None, description=(
        "how each replica runs: its own process, or its own container (default: procgraph "
        "run --runtime, process)"))
    image: str | None = Field(None, min_length=1, description=(
        "the container image (procgraph image build; default: procgraph run --image)"))
    devices: list[str] = Field(default_factory=list, description=(
        "host devices for the container: /dev/video0 or /dev/x:/dev/y[:rwm]"))
    network: Literal["host", "bridge"] | None = Field(None, description=(
        "the container's network: host (default: loopback brokers, GigE Vision cameras) or "
        "bridge (brokers must be reachable from the bridge)"))
    resources: ResourcesSpec | None = None

    @model_validator(mode="after")
    def _container_keys(self) -> AgentSpec:
        if self.runtime == "process":
            given = [k for k in ("image", "devices", "network", "resources")
                     if getattr(self, k)]
            if given:
                raise ValueError(f"{', '.join(given)}: only for runtime: docker (this agent "
                                 "has runtime: process); remove them or set runtime: docker")
        for device in self.devices:
            if not device.startswith("/dev/") or device.count(":") > 2:
                raise ValueError(f"devices: {device!r}: give /dev/NAME, or "
                                 "/dev/HOST:/dev/CONTAINER[:rwm]")
        return self


class LogsSpec(_Strict):
    """Where the supervisor keeps the line's log files, and how big they may grow.

    One file per replica (and one for the supervisor), rotated at ``max_mb`` with ``keep``
    older files beside it: at most ``max_mb * (keep + 1)`` MiB per replica.
    """

    dir: str | None = Field(None, description=(
        "folder of the log files (relative to the graph file; default: the state folder's logs/)"))
    max_mb: float = Field(5.0, gt=0, le=10_000, description="size of one file before it rotates")
    keep: int = Field(3, ge=0, le=100, description="rotated files kept per replica")


class MetricsSpec(_Strict):
    """Where the supervisor serves the line's Prometheus metrics (``/metrics``).

    On by default, on loopback and a free port (the URL is in the start line and the run
    record); ``enabled: false`` turns it off. Give ``host: 0.0.0.0`` and a fixed ``port`` for
    a Prometheus on another machine: the metrics carry no secrets but do name streams.
    """

    enabled: bool = Field(True, description="serve metrics (default: on)")
    host: str = Field("127.0.0.1", min_length=1, description="address to bind")
    port: int = Field(0, ge=0, le=65535, description="TCP port (0: a free one)")


class GraphSpec(_Strict):
    """The whole YAML file."""

    name: str
    description: str = ""
    brokers: dict[str, BrokerSpec] = Field(default_factory=lambda: {"main": BrokerSpec()})
    agents: dict[str, AgentSpec]
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description=(
        "the supervisor's Prometheus endpoint {enabled, host, port}"))
    logs: LogsSpec = Field(default_factory=LogsSpec, description=(
        "the line's log files {dir, max_mb, keep}"))
    shm: bool = Field(True, description=(
        "frames through shared memory between processes of one host (claim-check; "
        "docs/wire-format.md); false: every port inline"))
