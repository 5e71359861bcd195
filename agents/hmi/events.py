"""The operator screen's event log and degraded banner: what changed on the line, and when.

:class:`EventLog` keeps the newest events (agent down, back, restarted; parts rejected
incomplete; PLC link down; model changed), merging repeats of one kind that follow each
other closely into one line with a count. :func:`health_events` turns two successive health
tables (rows of :class:`procgraph.agents.hmi.health.HealthTracker`) into events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: events kept on screen
MAX_EVENTS = 100
#: repeats of one kind within this many seconds merge into one line
MERGE_S = 30.0


@dataclass
class Event:
    """One line of the event log: ``level`` is ``info``, ``warn`` or ``bad``."""

    at: float
    level: str
    kind: str
    text: str
    count: int = 1
    last_at: float = 0.0
    subjects: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the page."""
        return {"at": self.at, "last_at": self.last_at or self.at, "level": self.level,
                "kind": self.kind, "text": self.text, "count": self.count,
                "subjects": list(self.subjects[-6:])}


class EventLog:
    """The newest ``maxlen`` events, newest first; repeats of a ``merge`` key are merged."""

    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)

    def add(self, level: str, kind: str, text: str, now: float | None = None,
            merge: str | None = None, subject: str | None = None) -> Event:
        """Log one event; with ``merge``, the newest event of that key within ``MERGE_S``
        absorbs it (its count grows, its text becomes ``text``, ``subject`` is appended)."""
        now = time.time() if now is None else now
        if merge is not None:
            for ev in self._events:
                if ev.kind == merge and now - (ev.last_at or ev.at) <= MERGE_S:
                    ev.count += 1
                    ev.last_at = now
                    ev.text = text
                    if subject:
                        ev.subjects.append(subject)
                        del ev.subjects[:-6]
                    return ev
                if ev.kind == merge:
                    break
        ev = Event(now, level, merge or kind, text, 1, now, [subject] if subject else [])
        self._events.appendleft(ev)
        return ev

    def recent(self, kind: str, within_s: float, now: float | None = None) -> list[Event]:
        """Events of ``kind`` whose last occurrence is at most ``within_s`` old."""
        now = time.time() if now is None else now
        return [e for e in self._events if e.kind == kind and now - e.last_at <= within_s]

    def as_list(self) -> list[dict[str, Any]]:
        """All events kept, newest first, JSON-able."""
        return [e.as_dict() for e in self._events]


def health_events(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]
                  ) -> list[tuple[str, str, str]]:
    """``(level, kind, text)`` for what changed between two health tables."""
    old = {row["agent"]: row for row in before}
    out: list[tuple[str, str, str]] = []
    for row in after:
        name, status = row["agent"], row["status"]
        prev = old.get(name)
        was = prev["status"] if prev else None
        if status == "down" and was != "down":
            out.append(("bad", "agent_down", f"{name} is down: no heartbeat "
                        f"(0/{row['expected']} replicas alive)"))
        elif status == "degraded" and was != "degraded":
            out.append(("warn", "agent_degraded", f"{name} degraded: {row['alive']}/"
                        f"{row['expected']} replicas alive"))
        elif status in ("ok", "warn") and was in ("down", "degraded"):
            out.append(("info", "agent_up", f"{name} is back ({row['alive']}/"
                        f"{row['expected']} alive)"))
        if prev is not None and row["restarts"] > prev["restarts"]:
            n = row["restarts"] - prev["restarts"]
            out.append(("warn", "agent_restarted",
                        f"{name} restarted" + (f" {n} times" if n > 1 else "")
                        + f" ({row['restarts']} restarts in all)"))
    return out
