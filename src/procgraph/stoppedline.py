"""Open the brokers of a stopped line from their data, for tools such as ``procgraph audit``.

An embedded broker stops with its line, but a durable one (``persistence``, the default) left
its append-only file in the state folder. :func:`open_stopped_line` takes the line's lock (so
no ``procgraph run`` of it starts meanwhile, and a running line is refused), starts each
embedded broker on its own data on a free loopback port, yields every broker's URL, and
stops them again. A broker given by URL in the graph is used as written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from procgraph.brokers import EmbeddedBroker, aof_exists
from procgraph.constants import EMBEDDED
from procgraph.durability import broker_data_dir, graph_state_dir
from procgraph.errors import ProcgraphError
from procgraph.graph import GraphPlan
from procgraph.lease import Holder, LocalLock


class NothingToOpen(ProcgraphError):
    """A stopped line's embedded broker kept no data to open."""


@contextmanager
def open_stopped_line(plan: GraphPlan, state_dir: str | os.PathLike[str] | None = None,
                      kind: str = "valkey",
                      say: Callable[[str], None] = lambda line: None) -> Iterator[dict[str, str]]:
    """Every broker's URL of the stopped line ``plan``, its embedded brokers started on
    their data for the time of the ``with`` block.

    Raises :class:`procgraph.lease.LineHeld` when the line runs on this machine, and
    :class:`NothingToOpen` for an embedded broker without data (``persistence: none``, or a
    line that never ran with this state folder).
    """
    lock = LocalLock(graph_state_dir(plan.name, state_dir), plan.name, Holder.me(plan.file))
    lock.acquire()
    started: list[EmbeddedBroker] = []
    try:
        urls: dict[str, str] = {}
        for name, spec in plan.brokers.items():
            if spec.url != EMBEDDED:
                urls[name] = spec.url
                continue
            data_dir = broker_data_dir(plan, name, state_dir)
            if data_dir is None:
                raise NothingToOpen(
                    f"broker {name!r} of graph {plan.name!r} keeps no data (persistence: none):"
                    " a stopped line of it cannot be audited; audit it while it runs")
            if not aof_exists(data_dir):
                raise NothingToOpen(
                    f"broker {name!r} of graph {plan.name!r} has no data in {data_dir}: the "
                    "line has not run with this state folder (give --state-dir) or is on "
                    "another machine")
            broker = EmbeddedBroker(kind=kind, data_dir=data_dir)
            started.append(broker)
            broker.start()
            say(f"line {plan.name!r} is not running: broker {name!r} opened from {data_dir} "
                f"for the audit ({broker.url})")
            urls[name] = broker.url
        yield urls
    finally:
        for broker in started:
            broker.close()
        lock.release()
