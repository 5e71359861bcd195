"""Every Redis key layout, environment variable name and default that procgraph uses.

Nothing else in procgraph (or in its built-in agents) builds a ``pg:`` key or names a
``PROCGRAPH_*`` variable by hand: it calls the functions here.
"""

from __future__ import annotations

KEY_PREFIX = "pg"
WIRE_VERSION = 1

#: stream entry field holding the JSON header (envelope, scalars, array descriptors)
HEADER_FIELD = b"h"
#: prefix of the stream entry fields holding raw array bytes
ARRAY_FIELD_PREFIX = "a:"

DEAD_LETTER_SUFFIX = ":dead"
#: a graph broker's ``url`` when the supervisor starts the broker itself
EMBEDDED = "embedded"

# -- environment variables (read in one place: procgraph.settings) ---------------------------
ENV_PREFIX = "PROCGRAPH_"
#: broker URLs (JSON: name -> URL) the supervisor gives its replicas
BROKERS_ENV = "PROCGRAPH_BROKERS"
#: "1" when a replica runs under the supervisor (which prefixes its log lines)
SUPERVISED_ENV = "PROCGRAPH_SUPERVISED"
#: how many times the supervisor restarted this replica
RESTARTS_ENV = "PROCGRAPH_RESTARTS"
#: the URL of the embedded broker for tools run beside a line (``--redis``)
REDIS_ENV = "PROCGRAPH_REDIS"
#: the replica index where an orchestrator gives it (a Kubernetes StatefulSet ordinal)
REPLICA_ENV = "PROCGRAPH_REPLICA"
#: seconds an agent module's import may take before loading a graph gives up on it
IMPORT_TIMEOUT_ENV = "PROCGRAPH_IMPORT_TIMEOUT_S"
#: where ``procgraph image build`` caches the base tarball and wheelhouses
IMAGE_CACHE_ENV = "PROCGRAPH_IMAGE_CACHE"
#: the log level of a replica (debug, info, warning, error, critical; default info)
LOG_LEVEL_ENV = "PROCGRAPH_LOG_LEVEL"
#: "0" turns the supervisor's fork server off: replicas are spawned as new processes
FORKSERVER_ENV = "PROCGRAPH_FORKSERVER"
#: JSON {broker name: key}: how shared-memory files name the embedded brokers a supervisor
#: owns (the line's state folder, not the port, which changes each run)
SHM_KEYS_ENV = "PROCGRAPH_SHM_KEYS"
#: the XDG base directory under which each graph's state folder lives by default
XDG_STATE_ENV = "XDG_STATE_HOME"

DEFAULT_MAXLEN = 1000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_DELIVERIES = 3
DEFAULT_CLAIM_IDLE_MS = 30_000
DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0
#: a heartbeat key expires this many heartbeat periods after it was written
HEARTBEAT_TTL_PERIODS = 5


def stream_key(graph: str, agent: str, port: str) -> str:
    """Default stream key of an output port."""
    return f"{KEY_PREFIX}:{graph}:{agent}:{port}"


def probe_key(token: str) -> str:
    """A throwaway stream that probes how the broker counts stream reads (deleted after)."""
    return f"{KEY_PREFIX}:probe:{token}"


def dead_letter_key(stream: str) -> str:
    """Dead-letter stream that collects the poison entries of ``stream``."""
    return stream + DEAD_LETTER_SUFFIX


def heartbeat_key(graph: str, agent: str, replica: int) -> str:
    """Expiring key a replica refreshes while it is alive and making progress."""
    return f"{KEY_PREFIX}:{graph}:hb:{agent}:{replica}"


def heartbeat_pattern(graph: str) -> str:
    """SCAN pattern matching every heartbeat key of a graph."""
    return f"{KEY_PREFIX}:{graph}:hb:*"


def stream_pattern(graph: str) -> str:
    """SCAN pattern matching every key of a graph (filter streams with ``_type="STREAM"``)."""
    return f"{KEY_PREFIX}:{graph}:*"


def epoch_key(graph: str) -> str:
    """A random id the supervisor writes into each broker of a line: gone means data lost."""
    return f"{KEY_PREFIX}:{graph}:epoch"


def lease_key(graph: str, node: str | None = None) -> str:
    """The lease a running supervisor holds in each broker of its line (per node: --node)."""
    return f"{KEY_PREFIX}:{graph}:lease" + ("" if node is None else f":{node}")


def stopping_key(graph: str, agent: str, replica: int) -> str:
    """Set (to its pid) by a replica that is ending by itself: a heartbeat gone is no stall."""
    return f"{KEY_PREFIX}:{graph}:stopping:{agent}:{replica}"


def line_counters_key(graph: str) -> str:
    """Hash of line-wide counters (e.g. broker data lost), read by ``top`` and later tools."""
    return f"{KEY_PREFIX}:{graph}:counters"


# -- agent state (procgraph.state) ------------------------------------------------------------
def state_key(graph: str, agent: str, name: str, replica: int | None = None) -> str:
    """Redis key of one named part of an agent's durable state.

    ``replica`` None: shared by every replica of the agent; else private to that replica.
    """
    scope = agent if replica is None else f"{agent}:{replica}"
    return f"{KEY_PREFIX}:{graph}:state:{scope}:{name}"


# -- crash attribution (procgraph.delivery.recovery) -----------------------------------------
def inflight_key(graph: str, agent: str, replica: int) -> str:
    """The id of the entry a replica is re-handling alone after a restart."""
    return f"{KEY_PREFIX}:{graph}:inflight:{agent}:{replica}"


def crashes_key(graph: str, agent: str) -> str:
    """Hash: entry id -> how many times it crashed or hung a replica of the agent."""
    return f"{KEY_PREFIX}:{graph}:crashes:{agent}"


# -- model registry (procgraph.registry) -----------------------------------------------------
def model_key(name: str) -> str:
    """Hash holding the versions of a model in the model registry."""
    return f"{KEY_PREFIX}:model:{name}"


def model_channel(name: str) -> str:
    """Pub/sub channel announcing a new current version of a model."""
    return f"{KEY_PREFIX}:model-events:{name}"


def model_blob_key(name: str, version: str) -> str:
    """String holding the ONNX bytes of one version of a model."""
    return f"{model_key(name)}:blob:{version}"


def model_versions_key(name: str) -> str:
    """List of a model's versions, oldest first (the order rollback walks back in)."""
    return f"{model_key(name)}:versions"


def model_index_key() -> str:
    """Set of the names of every model in the registry."""
    return f"{KEY_PREFIX}:models"
