"""Log lines of a replica: they name the agent and replica (the supervisor adds colour)."""

from __future__ import annotations

import logging


def configure_logging(agent: str, replica: int, supervised: bool) -> None:
    """Log lines name the agent and replica (the supervisor adds a coloured prefix)."""
    fmt = "%(levelname)s %(name)s: %(message)s" if supervised else (
        f"%(asctime)s %(levelname)s [{agent}-{replica}] %(name)s: %(message)s")
    logging.basicConfig(level=logging.INFO, format=fmt, force=True)
