"""A line's shared-memory files in /dev/shm: readers' presence files and the supervisor's
clean-up of rings.

Every name carries the digest of its stream's broker (``urls``: the line's broker URLs by
name): another line of the same graph name on another broker has other files, and the
clean-up touches only files of this line's brokers. The rings themselves are
:mod:`procgraph.transport.shmring`; who writes and frees their slots,
:mod:`procgraph.delivery.claimcheck`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import redis
from redis.exceptions import ResponseError

from procgraph.transport.shmring import (
    RING_PREFIX,
    SHM_DIR,
    broker_digest,
    remove_rings,
    ring_name,
)

if TYPE_CHECKING:
    from procgraph.graph.plan import AgentPlan, GraphPlan


def presence_name(graph: str, agent: str, port: str, group: str, broker_url: str) -> str:
    """The file a reading agent puts in /dev/shm to say it sees this host's shared memory
    (for the stream of ``agent.port`` on ``broker_url``)."""
    return f"{RING_PREFIX}{graph}.{broker_digest(broker_url)}.{agent}.{port}.reader-{group}"


def line_ring_names(plan: GraphPlan, urls: Mapping[str, str]) -> set[str]:
    """The ring file names this graph's producers use (every node)."""
    return {ring_name(plan.name, a.name, i, o.port, urls[o.broker])
            for a in plan.agents.values() for i in range(a.replicas) for o in a.outputs
            if o.broker in urls}


def _presence_names(plan: GraphPlan, agents: list[AgentPlan],
                    urls: Mapping[str, str]) -> set[str]:
    """The presence files the readers among ``agents`` make."""
    return {presence_name(plan.name, i.source.partition(".")[0], i.source.partition(".")[2],
                          a.name, urls[i.broker])
            for a in agents for i in a.inputs if i.broker in urls}


def rings_still_needed(plan: GraphPlan, node: str | None,
                       client_of: Callable[[str], redis.Redis],
                       urls: Mapping[str, str]) -> set[str]:
    """The rings of ``node``'s producers (all when None) whose stream still has entries a
    reading group has not read or not acknowledged (``client_of``: a broker's client)."""
    needed: set[str] = set()
    for agent in plan.agents.values():
        if node is not None and agent.node != node:
            continue
        for out in agent.outputs:
            if out.broker not in urls:
                continue
            rings = {ring_name(plan.name, agent.name, i, out.port, urls[out.broker])
                     for i in range(agent.replicas)}
            if not any((SHM_DIR / r).exists() for r in rings):
                continue
            try:
                groups = client_of(out.broker).xinfo_groups(out.stream)
            except ResponseError:  # no such stream: nothing to read
                continue
            if any(g.get("pending") or g.get("lag") != 0 for g in groups):
                needed |= rings
    return needed


def clean_line_rings(plan: GraphPlan, node: str | None, stopping: bool,
                     keep: set[str] | None = None, *,
                     urls: Mapping[str, str]) -> list[str]:
    """The supervisor's clean-up of a line's rings; returns the names removed.

    Only files of this graph on this line's brokers (``urls``) are looked at. At start
    (``stopping=False``): rings that no producer of the plan uses (renamed ports, fewer
    replicas) and half-made ones; the others are kept, and their restarted producers keep
    honouring the slots still referenced; the presence files of the readers on ``node`` go
    (each makes its own again). At stop: the rings and presence files of the agents placed
    on ``node`` (all when None), but those named in ``keep``.
    """
    extra = keep
    elsewhere = [a for a in plan.agents.values() if node is not None and a.node != node]
    keep = _presence_names(plan, elsewhere, urls)
    if stopping:
        keep |= {ring_name(plan.name, a.name, i, o.port, urls[o.broker])
                 for a in elsewhere for i in range(a.replicas) for o in a.outputs
                 if o.broker in urls}
    else:
        keep |= line_ring_names(plan, urls)
    digests = {broker_digest(url) for url in urls.values()}
    return remove_rings(plan.name, digests, keep=keep | (extra or set()))
