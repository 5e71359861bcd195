"""The join's business rules: which outcome a part gets, and when a missing view is given up.

Plain Python on plain data, with no dependency on the procgraph agent SDK, so the rules are
tested on their own and reused by any writer (Modbus today, OPC UA later). A *part* is what
the join knows about one key: ``{view: verdict}``, each verdict a mapping with at least
``capture_ns`` (when the frame was captured), ``ts_ns`` (when the verdict was made) and
``defective``. It is the JSON the agent keeps in its durable state.

The rules, in one place:

* **Complete and on time**: every view is in and each verdict was made within ``window``
  of its frame's capture. The outcome names the defective views: ``ok`` (none),
  ``defective_<view>`` (one), ``defective_both`` (both views of a two-view join), otherwise
  ``defective_<view>_<view>...`` in the configured view order. ``reject`` is true unless
  the outcome is ``ok``.
* **Late**: a verdict made more than ``window`` after its capture. A slow classifier never
  passes a part: the part is ``incomplete`` with the fail-safe ``reject``.
* **Missing**: a view that has not come once it can no longer come in time, which is when
  either (a) that view's *watermark* (the latest capture time seen from it) is past the
  part's capture plus the window (event time: that camera has moved on), or (b) the window
  has passed on the wall clock since the part's capture, counting only time the join was
  running its loop. The part is ``incomplete`` with the fail-safe ``reject``.
* **Blocked time does not count**: the join calls :meth:`Expiry.alive` on every turn of its
  loop (about every 100 ms while reading). A gap longer than ``gap_s`` between two calls
  (blocked by backpressure while the PLC is away, or a restart) starts the wall-clock wait
  again from the end of the gap, so an outage does not turn on-time verdicts into fail-safe
  outcomes. Event-time watermarks are unaffected.
* A part's capture time is the earliest capture of its views; parts given up together are
  decided oldest first.
* **Announced parts**: a part the trigger announced, of which no view came, is missing every
  view; its window counts from the last moment a camera could still capture it (the
  agent's trigger plus grace, :meth:`Expiry.reason_from`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the outcome of a part with a missing or late view
INCOMPLETE = "incomplete"
#: the outcome of a part with no defective view
OK = "ok"

Part = Mapping[str, Mapping[str, Any]]
Clock = Callable[[], int]


@dataclass(frozen=True)
class Decision:
    """What a part gets: outcome name, what to actuate, and why if it is incomplete."""

    outcome: str
    reject: bool
    missing: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        """True for the fail-safe outcome (a missing or late view)."""
        return self.outcome == INCOMPLETE


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """The view names as a tuple; raises ValueError for none, an empty or a repeated name."""
    names = tuple(views)
    if not names:
        raise ValueError("a join needs at least one view")
    if any(not v or not isinstance(v, str) for v in names):
        raise ValueError(f"view names must be non-empty strings, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"view names must be unique, got {list(names)}")
    return names


def outcome_name(defective: Iterable[str], views: Sequence[str]) -> str:
    """The outcome of a complete, on-time part whose ``defective`` views were found bad.

    ``ok`` for none, ``defective_<view>`` for one, ``defective_both`` when both views of a
    two-view join are bad, else ``defective_`` and the bad views joined by ``_`` in the
    order of ``views``.
    """
    bad = set(defective)
    ordered = [v for v in views if v in bad]
    if not ordered:
        return OK
    if len(ordered) == 1:
        return f"defective_{ordered[0]}"
    if len(views) == 2:
        return "defective_both"
    return "defective_" + "_".join(ordered)


def capture_ns(part: Part) -> int:
    """The part's capture time: the earliest capture among its views (0 for an empty part)."""
    return min((int(v["capture_ns"]) for v in part.values()), default=0)


def late_views(part: Part, window_ns: int) -> list[str]:
    """Views whose verdict was made more than ``window_ns`` after its capture."""
    return [name for name, v in part.items()
            if int(v["ts_ns"]) - int(v["capture_ns"]) > window_ns]


def decide(part: Part, views: Sequence[str], window_ns: int,
           incomplete_reject: bool = True) -> Decision:
    """The outcome of a complete part, or of one given up with views missing.

    Args:
        part: ``{view: verdict}`` as described in the module docstring.
        views: every view of the join, in order.
        window_ns: the join window, from capture to verdict.
        incomplete_reject: the fail-safe: what a part with a missing or late view actuates.
    """
    missing = [v for v in views if v not in part]
    late = late_views(part, window_ns)
    if missing or late:
        return Decision(INCOMPLETE, incomplete_reject, missing, late)
    outcome = outcome_name([v for v in views if bool(part[v]["defective"])], views)
    return Decision(outcome, outcome != OK)


class Expiry:
    """Decides when a part's missing views are given up (watermarks and wall clock).

    Args:
        views: every view of the join.
        window_ns: the join window, from capture.
        clock: wall-clock time in ns (``time.time_ns``); tests pass a fake one.
        gap_s: a pause between two :meth:`alive` calls longer than this is time the join
            was not running; the wall-clock wait starts again after it.
    """

    def __init__(self, views: Sequence[str], window_ns: int, *, clock: Clock = time.time_ns,
                 gap_s: float = 0.5) -> None:
        self.views = check_views(views)
        self.window_ns = int(window_ns)
        self.clock = clock
        self.gap_ns = int(gap_s * 1e9)
        self.watermark_ns: dict[str, int] = {}
        #: wall-clock waits count from here at the earliest (start, or end of the last gap)
        self.resumed_ns = clock()
        self._last_alive_ns = self.resumed_ns

    def alive(self) -> bool:
        """Note a turn of the join's loop; True if it followed a gap (waits restarted)."""
        now = self.clock()
        gap = now - self._last_alive_ns > self.gap_ns
        if gap:
            self.resumed_ns = now
        self._last_alive_ns = now
        return gap

    def seen(self, view: str, capture: int) -> None:
        """Advance ``view``'s watermark with a verdict captured at ``capture`` ns."""
        if capture > self.watermark_ns.get(view, 0):
            self.watermark_ns[view] = capture

    def reason(self, part: Part) -> str | None:
        """Why the part's missing views are given up (``"watermark"``/``"clock"``) or None."""
        return self.reason_from(capture_ns(part), [v for v in self.views if v not in part])

    def reason_from(self, start_ns: int, missing: Iterable[str]) -> str | None:
        """Why views ``missing`` of a part that began at ``start_ns`` are given up, or None
        (a part announced by its trigger, with no view in yet, begins at the trigger)."""
        deadline = start_ns + self.window_ns
        if any(self.watermark_ns.get(view, 0) > deadline for view in missing):
            return "watermark"
        if self.clock() - max(start_ns, self.resumed_ns) > self.window_ns:
            return "clock"
        return None

    def horizon(self) -> int:
        """No part that began at or after this time (ns) can be given up now: a missing view
        is given up only past the window, by a watermark or by the wall clock."""
        latest = max(self.watermark_ns.values(), default=0)
        return max(latest, self.clock()) - self.window_ns

    def expired(self, part: Part) -> bool:
        """True when a missing view of ``part`` can no longer arrive in time."""
        return self.reason(part) is not None

    def due(self, pending: Mapping[str, Part]) -> list[str]:
        """Keys of the pending parts to give up now, oldest capture first."""
        found = [(capture_ns(part), key) for key, part in pending.items() if self.expired(part)]
        return [key for _, key in sorted(found)]


class StartOrder:
    """Keys in order of their start time, so that the parts a window may have ended for
    (those begun before :meth:`Expiry.horizon`) are found without looking at the rest.

    A key has one start; :meth:`put` moves it. Ties are ordered by key.
    """

    def __init__(self) -> None:
        self._order: list[tuple[int, str]] = []
        self._start: dict[str, int] = {}

    def put(self, key: str, start_ns: int) -> None:
        """Place ``key`` at ``start_ns`` (moved if it was elsewhere)."""
        old = self._start.get(key)
        if old == start_ns:
            return
        if old is not None:
            self.drop(key)
        self._start[key] = start_ns
        bisect.insort(self._order, (start_ns, key))

    def drop(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""
        old = self._start.pop(key, None)
        if old is not None:
            del self._order[bisect.bisect_left(self._order, (old, key))]

    def before(self, when_ns: int) -> list[str]:
        """The keys that start before ``when_ns``, earliest first."""
        return [key for _, key in self._order[:bisect.bisect_left(self._order, (when_ns, ""))]]

    def __len__(self) -> int:
        return len(self._order)
