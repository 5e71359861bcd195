"""What the supervisor says of a whole line: the ready banner, and the parts a run made.

- :func:`ready_banner`: once every replica has beaten, where to look: the addresses the agents
  give (``Agent.endpoints``: the HMI, the PLC, ...), each broker (password masked), the metrics
  endpoint, the log files, and how to stop.
- :func:`parts_by_outcome` / :func:`parts_line`: the line counters ``parts:<outcome>`` (what
  agents count with ``context.count``, the join per decided part), read at the start and the
  end of a run, so the closing line says what *this* run made.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import redis

from procgraph.errors import TRANSIENT_ERRORS, BrokerUnavailable
from procgraph.graph import GraphPlan, agent_class
from procgraph.health import read_line_counters
from procgraph.redact import redact_url

_DOWN: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, redis.RedisError,
                                          BrokerUnavailable)


def ready_banner(plan: GraphPlan, node: str | None, replicas: int, took_s: float,
                 brokers: Mapping[str, str], owned: set[str], broker_kind: str,
                 metrics_url: str | None, log_dir: Path) -> list[str]:
    """The banner's lines: the ready line, then one row per address, aligned."""
    lines = [f"ready in {took_s:.1f}s: line {plan.name!r}, {replicas} replica(s) up"]
    rows: list[tuple[str, str]] = []
    for agent in plan.agents_on(node):
        try:
            cls = agent_class(plan, agent.name)
            found = cls.endpoints(cls.Params.model_validate(agent.params))
        except Exception:  # a user's endpoints() must not stop the line
            continue
        rows += [(label, f"{address}  ({agent.name})") for label, address in found.items()]
    for name, url in brokers.items():
        kind = f"embedded {broker_kind}" if name in owned else "external"
        rows.append((f"broker {name}", f"{redact_url(url)}  ({kind})"))
    if metrics_url is not None:
        rows.append(("metrics", metrics_url))
    rows.append(("logs", f"procgraph logs {plan.name} [AGENT] -f  ({log_dir})"))
    rows.append(("stop", f"Ctrl-C, or procgraph stop {plan.name}"))
    width = max(len(label) for label, _ in rows)
    return lines + [f"  {label:<{width}}  {value}" for label, value in rows]


def parts_by_outcome(clients: Mapping[str, redis.Redis], graph: str) -> dict[str, int] | None:
    """Parts by outcome counted so far, summed over the brokers; None when one cannot tell."""
    total: dict[str, int] = {}
    for client in clients.values():
        try:
            counters = read_line_counters(client, graph)
        except _DOWN:
            return None
        for key, value in counters.items():
            if key.startswith("parts:"):
                total[key[6:]] = total.get(key[6:], 0) + value
    return total


def parts_line(before: Mapping[str, int], after: Mapping[str, int]) -> str | None:
    """``this run: N parts (ok .., defective_..)`` from two readings (None: no part)."""
    run = {k: v - before.get(k, 0) for k, v in sorted(
        after.items(), key=lambda item: (item[0] != "ok", item[0])) if v - before.get(k, 0) > 0}
    if not run:
        return None
    detail = ", ".join(f"{k} {v}" for k, v in run.items())
    return f"this run: {sum(run.values())} parts ({detail})"
