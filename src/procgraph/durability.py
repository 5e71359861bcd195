"""Durability of a line's brokers: where an embedded broker keeps its data, and whether a broker
came back with it.

State folder: each graph has one, ``$XDG_STATE_HOME/procgraph/<graph>/`` (default
``~/.local/state/procgraph/<graph>/``), or the folder given by ``procgraph run --state-dir`` /
``Supervisor(state_dir=...)``. An embedded broker with persistence keeps its AOF in
``<state folder>/brokers/<name>/`` unless the graph gives it a ``data_dir``.

Epoch marker: at the start of a line the supervisor writes a random id into each broker it uses
(:func:`procgraph.constants.epoch_key`, written only when absent, so a broker that kept its data
keeps its id). A broker that later answers without that id lost its data: restarted with no
persistence, or flushed. :class:`EpochWatch` then says so in one line and counts
``broker_data_lost`` in that broker's line counters (:func:`procgraph.health.add_line_counter`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from procgraph.constants import EMBEDDED, XDG_STATE_ENV, epoch_key
from procgraph.errors import TRANSIENT_ERRORS, BrokerUnavailable
from procgraph.health import add_line_counter
from procgraph.redact import redact_url

if TYPE_CHECKING:
    from procgraph.graph import GraphPlan

#: the line counter an owned or used broker's data loss adds one to
DATA_LOST_COUNTER = "broker_data_lost"
#: seconds between two checks of a broker's epoch while the line runs
CHECK_EVERY_S = 1.0
_DOWN: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, BrokerUnavailable)


def default_state_root() -> Path:
    """``$XDG_STATE_HOME/procgraph`` when that variable holds an absolute path, else
    ``~/.local/state/procgraph`` (the XDG base directory rule)."""
    xdg = os.environ.get(XDG_STATE_ENV, "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "procgraph"


def graph_state_dir(graph: str, state_dir: str | os.PathLike[str] | None = None) -> Path:
    """The state folder of graph ``graph``: ``state_dir`` when given, else the default one."""
    if state_dir is not None:
        return Path(state_dir).expanduser().resolve()
    return default_state_root() / graph


def broker_data_dir(plan: GraphPlan, name: str,
                    state_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Where embedded broker ``name`` of ``plan`` keeps its AOF (None: no persistence).

    The broker's ``data_dir`` from the graph (relative to the graph file's folder) wins over
    ``<state folder>/brokers/<name>``.
    """
    spec = plan.brokers[name]
    if spec.url != EMBEDDED or spec.persistence is None:
        return None
    if spec.data_dir is not None:
        path = Path(spec.data_dir).expanduser()
        return (path if path.is_absolute() else plan.graph_dir / path).resolve()
    return graph_state_dir(plan.name, state_dir) / "brokers" / name


def new_epoch() -> str:
    """A fresh random epoch id."""
    return secrets.token_hex(8)


def claim_epoch(client: redis.Redis, graph: str, epoch: str) -> str:
    """Write ``epoch`` unless the broker has one already; return the broker's epoch."""
    key = epoch_key(graph)
    pipe = client.pipeline(transaction=True)
    pipe.set(key, epoch, nx=True)
    pipe.get(key)
    _, value = pipe.execute()
    return value.decode() if isinstance(value, bytes) else str(value)


def read_epoch(client: redis.Redis, graph: str) -> str | None:
    """The broker's epoch id, None when it has none (never marked, or data lost)."""
    value = client.get(epoch_key(graph))
    return value.decode() if isinstance(value, bytes) else None


@dataclass
class BrokerWatch:
    """What is known about one broker of a running line."""

    name: str
    url: str
    owned: bool
    data_dir: Path | None
    had_aof: bool = False
    #: embedded, started by the supervisor of that node (``--node`` runs): not ours to restart
    node: str | None = None
    epoch: str | None = None
    next_check: float = 0.0


@dataclass
class EpochWatch:
    """Marks every broker of a line at start and says when one came back without its data.

    ``say`` prints one supervisor line. Nothing here raises on an unreachable broker: it is
    marked (or checked) at the next try once it answers.
    """

    graph: str
    say: Callable[[str], None]
    epoch: str = field(default_factory=new_epoch)
    brokers: dict[str, BrokerWatch] = field(default_factory=dict)
    lost: int = 0

    def add(self, name: str, url: str, *, owned: bool, data_dir: Path | None = None,
            had_aof: bool = False, node: str | None = None) -> None:
        """Watch broker ``name``: ``owned`` when this supervisor started it (embedded), with
        its ``data_dir`` (None: in memory) and whether that folder held an AOF before;
        ``node``: an embedded broker that the supervisor of that node starts."""
        self.brokers[name] = BrokerWatch(name, url, owned, data_dir, had_aof, node)

    def claim(self, name: str, client: redis.Redis) -> None:
        """Mark the broker at start (keeping the id a durable broker came back with)."""
        watch = self.brokers[name]
        try:
            found = read_epoch(client, self.graph)
            watch.epoch = claim_epoch(client, self.graph, self.epoch)
        except _DOWN:
            return
        if found is None and watch.owned and watch.had_aof:
            self._lost(watch, client, "came back empty at start although its data folder "
                       "had an AOF")

    def check(self, name: str, client: redis.Redis, now: float, *, force: bool = False) -> None:
        """Check the broker's epoch (at most every ``CHECK_EVERY_S`` unless ``force``)."""
        watch = self.brokers[name]
        if not force and now < watch.next_check:
            return
        watch.next_check = now + CHECK_EVERY_S
        if watch.epoch is None:
            self.claim(name, client)
            return
        try:
            found = read_epoch(client, self.graph)
        except _DOWN:
            return  # down: checked again once it answers
        if found == watch.epoch:
            return
        how = "came back empty" if found is None else f"came back with other data (epoch {found})"
        self._lost(watch, client, how)
        try:
            client.set(epoch_key(self.graph), watch.epoch)
        except _DOWN:
            watch.epoch = None  # claimed again at the next check

    def _lost(self, watch: BrokerWatch, client: redis.Redis, how: str) -> None:
        self.lost += 1
        self.say(lost_line(watch, how))
        with contextlib.suppress(BrokerUnavailable):
            add_line_counter(client, self.graph, DATA_LOST_COUNTER)


def lost_line(watch: BrokerWatch, how: str) -> str:
    """The one line that says a broker lost its data, what went with it and what to do."""
    what = ("its streams' backlog, consumer groups and agent state (sequence counters, "
            "written keys) are gone")
    if watch.owned and watch.data_dir is None:
        fix = (f"to keep them, remove 'persistence: none' from brokers.{watch.name} "
               "(an AOF with appendfsync everysec is the default)")
        where = "embedded, persistence: none"
    elif watch.owned:
        fix = f"check its data folder {watch.data_dir} and {watch.data_dir}/broker.log"
        where = f"embedded, AOF in {watch.data_dir}"
    elif watch.node is not None:
        fix = f"see the supervisor log on node {watch.node!r} (keep its persistence on)"
        where = f"embedded on node {watch.node!r}, {redact_url(watch.url)}"
    else:
        fix = "turn on that server's persistence (appendonly yes) or use an embedded broker"
        where = redact_url(watch.url)
    return (f"data lost: broker {watch.name!r} ({where}) {how}: {what}; {fix}; counted as "
            f"{DATA_LOST_COUNTER}")
