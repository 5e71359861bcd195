"""An agent for the mailbox tests, copied beside the test's graph like a user's module."""

from __future__ import annotations

import time

from procgraph.agents.messages import PartOutcome

from procgraph import Agent, Output


class Outcomes(Agent):
    """Sends ``count`` joined outcomes ``part-0`` .. at ``rate_hz``, as the join would."""

    class Params(Agent.Params):
        count: int = 100
        rate_hz: float = 100.0

    outcomes = Output(PartOutcome)

    def run(self) -> None:
        """Send them (a restart goes on where it stopped), then idle."""
        names = ["ok", "defective_front", "ok", "defective_back", "incomplete"]
        for n in range(int(self.state.get("next", 0)), self.params.count):
            if not self.running:
                return
            name = names[n % len(names)]
            self.outcomes.send(PartOutcome(key=f"part-{n}", outcome=name, reject=name != "ok",
                                           capture_ns=time.time_ns(), verdicts={}))
            self.state.put("next", n + 1)
            self.flush()
            self.sleep(1.0 / self.params.rate_hz)
        while self.sleep(0.2):
            pass
