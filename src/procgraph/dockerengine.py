"""The Docker engine procgraph talks to (``$DOCKER_HOST``), for image builds and containers."""

from __future__ import annotations

import os
from typing import Any

from procgraph.errors import ProcgraphError, require


class EngineUnavailable(ProcgraphError):
    """No Docker engine answers; the message says where it looked and what to do."""


def engine_url() -> str:
    """Where the engine is looked for: ``$DOCKER_HOST``, else the default socket."""
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def engine_client(timeout_s: float = 60, pool_size: int | None = None) -> Any:
    """A docker SDK client of the engine that answered a ping, else EngineUnavailable."""
    docker = require("docker", "containers")
    options: dict[str, Any] = {"timeout": timeout_s}
    if pool_size is not None:
        options["max_pool_size"] = pool_size
    try:
        client = docker.from_env(**options)  # type: ignore[attr-defined]
        client.ping()
    except Exception as exc:
        raise EngineUnavailable(
            f"no Docker engine answers at {engine_url()} ({type(exc).__name__}): start dockerd "
            "(apt-get install -y docker.io) or set DOCKER_HOST") from None
    return client
