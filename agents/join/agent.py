"""The join agent: gathers the verdicts of every view of a part and emits one outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from procgraph.agents.join import rules
from procgraph.agents.messages import PartOutcome, Trigger, Verdict
from pydantic import Field, field_validator

from procgraph import Agent, Input, Output


class JoinAgent(Agent):
    """Joins the verdicts of N views by part key and emits one ``PartOutcome`` per part.

    ``views`` maps camera id -> view name. Verdicts of one part share a key. A part whose
    views are all in, on time, gets ``ok`` / ``defective_<view>`` / ``defective_both``; a
    part with a late view (verdict made more than ``window_ms`` after capture) or a missing
    one gets ``incomplete`` with the fail-safe ``incomplete_reject``. The rules live in
    :mod:`procgraph.agents.join.rules`; this class keeps the state and talks to the stream.

    Wire ``triggers`` (optional) from the part trigger, and a part no camera saw (every
    camera skipped its trigger) is decided too: ``incomplete``, every view missing, once
    ``trigger_grace_ms`` (the cameras' ``max_trigger_age_ms``) plus the window have passed
    since the trigger. Without it such a part never reaches the join.

    State (``self.state``, written with the acks): ``pending`` (map of half-joined parts),
    ``announced`` (map of triggered parts with no verdict yet: key -> trigger_ns),
    ``decided`` (keyset of decided keys, pruned after ``done_ttl_s``). A duplicate verdict,
    or one for a part already decided, is logged and ignored. Run one replica. Each part
    decided is counted by outcome in the line counter ``parts:<outcome>`` (``context.count``;
    Prometheus: ``procgraph_parts_total``).
    """

    class Params(Agent.Params):
        views: dict[str, str] = Field(
            default_factory=lambda: {"front": "front", "back": "back"},
            description="camera id -> view name; one verdict per view makes a part")
        window_ms: float = Field(3000, gt=0, description="join window from capture time")
        incomplete_reject: bool = Field(True, description="fail-safe for a missing/late view")
        gap_s: float = Field(0.5, gt=0, description="a pause in the loop longer than this "
                             "(blocked, restarting) does not count toward the window")
        done_ttl_s: int = Field(86400, ge=60, description="how long decided keys are kept")
        trigger_grace_ms: float = Field(
            2000, ge=0, description="with the triggers input: how long after its trigger a "
            "camera may still capture a part (the cameras' max_trigger_age_ms); a part no view "
            "came of is given up this long plus the window after its trigger")

        @field_validator("views")
        @classmethod
        def _views(cls, v: dict[str, str]) -> dict[str, str]:
            rules.check_views(list(v.values()))
            return v

    params: Params

    #: wall clock (ns) of the window rules; tests put a fake one here
    clock: ClassVar[Callable[[], int]] = time.time_ns

    verdicts = Input(Verdict, doc="verdicts of every view (fan-in)")
    triggers = Input(Trigger, optional=True,
                     doc="the part trigger: a part it announced that no view came of is "
                     "still decided (incomplete)")
    outcomes = Output(PartOutcome, doc="one joined outcome per part (part_seq unset)")

    def setup(self) -> None:
        """Load the half-joined parts from the state; start the window clock."""
        p = self.params
        self.view_of = dict(p.views)
        self.view_names = tuple(self.view_of.values())
        self.window_ns = int(p.window_ms * 1e6)
        self.expiry = rules.Expiry(self.view_names, self.window_ns, clock=type(self).clock,
                                   gap_s=p.gap_s)
        self.pending_state = self.state.map("pending")
        self.decided = self.state.keyset("decided")
        # mirrored here so the window check on every tick reads no broker
        self.pending: dict[str, dict[str, Any]] = dict(self.pending_state.items())
        self.announced_state = self.state.map("announced")
        self.announced: dict[str, int] = {k: int(v) for k, v in self.announced_state.items()}
        self.grace_ns = int(p.trigger_grace_ms * 1e6)
        # pending parts by capture, announced ones by trigger + grace: where windows end
        self.starts = rules.StartOrder()
        for key, part in self.pending.items():
            self.starts.put(key, rules.capture_ns(part))
        for key, trigger_ns in self.announced.items():
            self.starts.put(key, trigger_ns + self.grace_ns)
        self.last_prune = 0.0
        self.log.info("joining views %s by key, window %.0f ms, fail-safe %s; %d parts pending",
                      ", ".join(f"{c}->{v}" for c, v in self.view_of.items()), p.window_ms,
                      "reject" if p.incomplete_reject else "pass", len(self.pending))

    def on_verdicts(self, v: Verdict) -> None:
        """Add a verdict to its part; emit the part when every view is in."""
        self.expiry.alive()
        view = self.view_of.get(v.camera)
        if view is None:
            self.log.warning("verdict from unknown camera %r (expected %s); ignored",
                             v.camera, ", ".join(self.view_of))
            return
        self.expiry.seen(view, v.capture_ns)
        if not v.key:
            self.log.warning("verdict from %s without a part key ignored", v.camera)
        elif view in self.pending.get(v.key, {}):
            self.log.warning("duplicate verdict for part %s (%s) ignored", v.key, view)
        elif (v.key not in self.pending and v.key not in self.announced
              and v.key in self.decided):  # decided: neither pending nor announced
            self.log.warning("verdict for part %s (%s) ignored: already decided", v.key, view)
        else:
            self._unannounce(v.key)  # a view came: the part is pending from now on
            part = dict(self.pending.get(v.key, {}))
            part[view] = v.model_dump(mode="json")
            if all(name in part for name in self.view_names):
                self._expire(complete=(v.key, part))
                return
            self.pending[v.key] = part
            self.pending_state.put(v.key, part)
            self.starts.put(v.key, rules.capture_ns(part))
        self._expire()

    def on_triggers(self, t: Trigger) -> None:
        """Remember a triggered part, so that it is decided even if no view of it comes."""
        self.expiry.alive()
        if t.key and t.key not in self.pending and t.key not in self.announced and (
                t.key not in self.decided):
            self.announced[t.key] = t.trigger_ns
            self.announced_state.put(t.key, t.trigger_ns)
            self.starts.put(t.key, t.trigger_ns + self.grace_ns)
        self._expire()

    def _unannounce(self, key: str) -> None:
        if self.announced.pop(key, None) is not None:
            self.announced_state.delete(key)
            self.starts.drop(key)

    def tick(self) -> None:
        """Give the fail-safe outcome to parts whose missing views can no longer come."""
        self.expiry.alive()
        self._expire()  # the runtime writes the state after tick(), after what it sent
        if time.monotonic() - self.last_prune > 60:
            self.last_prune = time.monotonic()
            self.decided.prune(self.params.done_ttl_s)

    def _expire(self, complete: tuple[str, dict[str, Any]] | None = None) -> int:
        """Emit the parts given up now and the one just completed, oldest capture first."""
        done = complete[0] if complete is not None else None
        ready: list[tuple[int, str, dict[str, Any], str | None]] = []
        for key in self.starts.before(self.expiry.horizon()):  # the others are in time
            part = self.pending.get(key)
            if part is not None:
                why = self.expiry.reason(part)
                if why is not None and key != done:
                    ready.append((rules.capture_ns(part), key, part, why))
                continue
            trigger_ns = self.announced[key]  # no view came of this one
            why = self.expiry.reason_from(trigger_ns + self.grace_ns, self.view_names)
            if why is not None:
                ready.append((trigger_ns, key, {}, why))
        if complete is not None:
            ready.append((rules.capture_ns(complete[1]), complete[0], complete[1], None))
        for start, key, part, why in sorted(ready, key=lambda r: (r[0], r[1])):
            self._emit(key, part, why, start)
        return len(ready)

    def _emit(self, key: str, part: dict[str, Any], why: str | None, start_ns: int) -> None:
        d = rules.decide(part, self.view_names, self.window_ns, self.params.incomplete_reject)
        verdicts = {name: Verdict.model_validate(x) for name, x in part.items()}
        if d.incomplete:
            detail = []
            if d.missing:
                detail.append(f"missing {', '.join(d.missing)} (by {why or 'clock'})")
            if d.late:
                detail.append(f"late {', '.join(d.late)}")
            self.log.warning("part %s incomplete (%s): fail-safe %s", key, "; ".join(detail),
                             "reject" if d.reject else "pass")
        truths = [x.truth for x in verdicts.values()]
        truth = None if None in truths or d.missing else any(t != "ok" for t in truths)
        latest = max(verdicts.values(), key=lambda x: x.ts_ns, default=None)
        self.outcomes.send(PartOutcome(
            key=key, outcome=d.outcome, reject=d.reject, capture_ns=start_ns,
            verdicts=verdicts, missing=d.missing, truth_defective=truth,
            trace=list(latest.trace) if latest is not None else []))
        self.context.count(f"parts:{d.outcome}")  # procgraph_parts_total{outcome}
        self.pending.pop(key, None)
        self.pending_state.delete(key)
        self.starts.drop(key)
        self._unannounce(key)
        self.decided.add(key)
