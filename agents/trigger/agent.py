"""``PartTrigger``: a source that emits one trigger per part, numbered, at a fixed rate."""

from __future__ import annotations

import time

from procgraph.agents.camera.sources import RateLimiter
from procgraph.agents.messages import Trigger
from pydantic import Field

from procgraph import Agent, BrokerUnavailable, Output
from procgraph.health import read_heartbeats

__all__ = ["PartTrigger"]


class PartTrigger(Agent):
    """Emits one :class:`~procgraph.agents.messages.Trigger` per part, ``rate_hz`` a second.

    The synthetic line's photo-eye: every camera wired to ``triggers`` captures one frame per
    trigger, with the trigger's key, so all views of a part share the key by construction
    and a camera that stalls or restarts misses only the parts triggered while it was away.

    The counter is kept in the agent's state (``next_seq``, written with the sends): a
    restarted trigger goes on where it stopped and never gives a key twice. After ``count``
    triggers (0 = never) it stays idle until stopped. With ``wait_for`` (the cameras' agent
    names) the first trigger waits until each of them is up (has a heartbeat), as a machine
    does not start its conveyor before its cameras are ready.
    """

    class Params(Agent.Params):
        rate_hz: float = Field(5.0, gt=0, description="parts (triggers) per second")
        count: int = Field(0, ge=0, description="stop after N triggers; 0 = never")
        key_format: str = Field("part-{seq}", description="part key; {seq} is the counter")
        wait_for: list[str] = Field(
            default_factory=list, description="agents that must be up (a heartbeat) before "
            "the first trigger, e.g. the cameras")
        wait_timeout_s: float = Field(60.0, gt=0, description="start anyway after this long")

    params: Params

    triggers = Output(Trigger, doc="one trigger per part (key, seq, trigger_ns)")

    def setup(self) -> None:
        """Check the key format; say where the counter starts."""
        p = self.params
        try:
            p.key_format.format(seq=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"key_format {p.key_format!r} may only use {{seq}}: {exc}") from exc
        self.log.info("trigger at %.3g parts/s from seq %d%s", p.rate_hz,
                      self.state.get("next_seq", 0), f" to {p.count}" if p.count else "")

    def run(self) -> None:
        """Trigger until stopped (or ``count`` is reached, then idle)."""
        p = self.params
        self.wait_for_agents()
        limiter = RateLimiter(p.rate_hz, sleep=self.sleep)
        seq = int(self.state.get("next_seq", 0))
        while self.running:
            if p.count and seq >= p.count:
                self.sleep(0.2)
                continue
            limiter.wait()
            if not self.running:
                break
            self.triggers.send(Trigger(key=p.key_format.format(seq=seq), seq=seq,
                                       trigger_ns=time.time_ns()))
            seq += 1
            self.state.put("next_seq", seq)  # written with the trigger, in one transaction

    def wait_for_agents(self) -> None:
        """Wait (up to ``wait_timeout_s``) until every agent in ``wait_for`` has a heartbeat."""
        want = set(self.params.wait_for)
        if not want:
            return
        try:
            client = self.context.redis()
        except RuntimeError:  # no broker (a test harness): nobody to wait for
            self.log.warning("no broker: not waiting for %s", ", ".join(sorted(want)))
            return
        deadline = time.monotonic() + self.params.wait_timeout_s
        missing = want
        while self.running and time.monotonic() < deadline:
            try:
                beats = read_heartbeats(client, self.context.graph)
            except BrokerUnavailable:
                beats = {}
            missing = want - {agent for agent, _ in beats}
            if not missing:
                self.log.info("%s up: triggering", ", ".join(sorted(want)))
                return
            self.sleep(0.1)
        if self.running:
            self.log.warning("%s not up after %.0f s: triggering anyway", ", ".join(
                sorted(missing)), self.params.wait_timeout_s)
