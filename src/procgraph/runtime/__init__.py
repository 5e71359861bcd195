"""The agent runtime: hosts one replica of one agent against its brokers.

- :mod:`~procgraph.runtime.runner`: ``AgentRunner`` (writers, readers, state, lifecycle)
- :mod:`~procgraph.runtime.consume`: prefetch, batches, handler retry, dispatch, acks
- :mod:`~procgraph.runtime.outbox`: where a handler's or a source's sends go
- :mod:`~procgraph.runtime.heartbeat`: the heartbeat thread (withheld while stalled)
- :mod:`~procgraph.runtime.logs`: ``configure_logging``

The delivery rules it applies live in :mod:`procgraph.delivery`.
"""

from __future__ import annotations

import logging

from procgraph.graph import GraphPlan
from procgraph.runtime.logs import configure_logging
from procgraph.runtime.runner import AgentRunner
from procgraph.settings import load_settings

__all__ = ["AgentRunner", "configure_logging", "run_replica"]


def run_replica(plan: GraphPlan, agent: str, replica: int, urls: dict[str, str],
                parent: str = "supervisor") -> None:
    """Run one replica of ``agent`` in this process until SIGTERM/SIGINT (``procgraph agent``).

    ``urls`` maps each broker name of the graph to its URL. Logging is at
    ``$PROCGRAPH_LOG_LEVEL`` (``@pg`` records under the supervisor, which files them; plain
    lines with the time alone). Under a supervisor the replica also stops when the
    supervisor is gone (its parent process, named ``parent`` in the message: the
    supervisor, or the line's fork server, :mod:`procgraph.forkserver`). A crash (any
    exception out of the agent) is logged with its traceback, and the process exits with
    code 1 for the supervisor to restart it.
    """
    settings = load_settings()
    supervised = settings.supervised
    configure_logging(agent, replica, supervised=supervised, level=settings.log_level)
    try:
        runner = AgentRunner(plan, agent, replica, urls)
        runner.install_signal_handlers()
        if supervised:
            runner.watch_parent(parent)
        runner.run()
    except Exception as exc:
        logging.getLogger("procgraph.runtime").critical(
            "%s[%d] crashed: %s: %s", agent, replica, type(exc).__name__, exc, exc_info=True)
        raise SystemExit(1) from None
