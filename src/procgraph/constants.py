"""Every Redis key prefix and default that procgraph uses, in one place."""

from __future__ import annotations

KEY_PREFIX = "pg"
WIRE_VERSION = 1

#: stream entry field holding the JSON header (envelope, scalars, array descriptors)
HEADER_FIELD = b"h"
#: prefix of the stream entry fields holding raw array bytes
ARRAY_FIELD_PREFIX = "a:"

DEAD_LETTER_SUFFIX = ":dead"

#: environment variable with the broker URLs (JSON: name -> URL) the supervisor gives replicas
BROKERS_ENV = "PROCGRAPH_BROKERS"

DEFAULT_MAXLEN = 1000
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_DELIVERIES = 3
DEFAULT_CLAIM_IDLE_MS = 30_000
DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0


def stream_key(graph: str, agent: str, port: str) -> str:
    """Default stream key of an output port."""
    return f"{KEY_PREFIX}:{graph}:{agent}:{port}"


def dead_letter_key(stream: str) -> str:
    """Dead-letter stream that collects the poison entries of ``stream``."""
    return stream + DEAD_LETTER_SUFFIX


def heartbeat_key(graph: str, agent: str, replica: int) -> str:
    """Expiring key a replica refreshes while it is alive and making progress."""
    return f"{KEY_PREFIX}:{graph}:hb:{agent}:{replica}"


def heartbeat_pattern(graph: str) -> str:
    """SCAN pattern matching every heartbeat key of a graph."""
    return f"{KEY_PREFIX}:{graph}:hb:*"


def model_key(name: str) -> str:
    """Hash holding the versions of a model in the model registry."""
    return f"{KEY_PREFIX}:model:{name}"


def model_channel(name: str) -> str:
    """Pub/sub channel announcing a new current version of a model."""
    return f"{KEY_PREFIX}:model-events:{name}"


# -- model registry (procgraph.models) ------------------------------------------------------
def model_blob_key(name: str, version: str) -> str:
    """String holding the ONNX bytes of one version of a model."""
    return f"{model_key(name)}:blob:{version}"


def model_versions_key(name: str) -> str:
    """List of a model's versions, oldest first (the order rollback walks back in)."""
    return f"{model_key(name)}:versions"


def model_index_key() -> str:
    """Set of the names of every model in the registry."""
    return f"{KEY_PREFIX}:models"
