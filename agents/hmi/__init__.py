"""procgraph built-in HMI: the operator web page (live previews, counters, health)."""

from procgraph.agents.hmi.agent import HmiAgent

__all__ = ["HmiAgent"]
