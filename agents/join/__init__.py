"""procgraph join agent: N views of a part by key, a window, a fail-safe outcome."""

from procgraph.agents.join.agent import JoinAgent

__all__ = ["JoinAgent"]
