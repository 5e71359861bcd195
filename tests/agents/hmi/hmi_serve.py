"""An HmiAgent in a process of its own, for the connection tests.

``python hmi_serve.py TOKEN`` starts the agent under AgentHarness on a free loopback port,
prints the port on one line and serves until its stdin is closed.
"""

from __future__ import annotations

import sys

from procgraph.agents.hmi import HmiAgent
from procgraph.agents.hmi.state import LiveState

from procgraph.testing import AgentHarness


def main() -> None:
    """Serve until stdin closes."""
    with AgentHarness(HmiAgent, {"port": 0, "token": sys.argv[1]}) as h:
        agent = h.agent
        assert isinstance(agent, HmiAgent) and isinstance(agent.live, LiveState)
        print(agent.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
