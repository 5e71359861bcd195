"""The simulated PLC as an agent, so a demo graph starts it with everything else."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from procgraph import Agent


class SimulatedPlcAgent(Agent):
    """Runs a simulated Modbus TCP PLC that logs each part and clears the handshake.

    Set ``enabled: false`` (e.g. ``"${PLC_SIM:-true}"``) when a real PLC is connected.
    """

    #: listens on ``params.port`` for the PLC writer: a deployment exposes it inside only
    serves: ClassVar[Literal["public", "internal"] | None] = "internal"

    class Params(Agent.Params):
        enabled: bool = True
        host: str = "127.0.0.1"
        port: int = Field(5020, ge=1, le=65535)
        unit_id: int = Field(1, ge=0, le=255)
        base: int = Field(0, ge=0)
        use_coil_for_ready: bool = False
        ready_coil: int = 0
        slots: int = Field(1, ge=1, le=64, description="mailbox slots (as the writer's)")
        taken_seq: bool = Field(False, description="write each taken part's seq (as the "
                                "writer's taken_seq)")
        summary_every_s: float = Field(10.0, gt=0)

    params: Params

    @classmethod
    def endpoints(cls, params: Any) -> dict[str, str]:
        """The simulated PLC's address (while enabled)."""
        if not params.enabled:
            return {}
        return {"simulated PLC": f"{params.host}:{params.port} unit {params.unit_id}"}

    def run(self) -> None:
        """Serve until stopped, logging a summary every ``summary_every_s``."""
        if not self.params.enabled:
            self.log.info("simulated PLC disabled")
            while self.sleep(1.0):
                pass
            return
        from procgraph.agents.modbus.registers import RegisterMap
        from procgraph.agents.modbus.sim import SimulatedPlc
        from procgraph.agents.modbus.sim_main import format_summary

        p = self.params
        regmap = RegisterMap(unit_id=p.unit_id, base=p.base, slots=p.slots,
                             taken_seq=p.taken_seq,
                             use_coil_for_ready=p.use_coil_for_ready, ready_coil=p.ready_coil)
        plc = SimulatedPlc(p.host, p.port, regmap)
        plc.start_thread()
        self.log.info("simulated PLC listening on %s:%d", p.host, p.port)
        try:
            last = time.monotonic()
            while self.sleep(0.5):
                if time.monotonic() - last >= p.summary_every_s:
                    last = time.monotonic()
                    self.log.info("%s", format_summary(plc.summary()))
        finally:
            summary = plc.summary()
            clean = not (summary["duplicates"] or summary["gaps"] or summary["violations"]
                         or summary["invalid"] or summary["unflagged"])
            self.log.log(logging.INFO if clean else logging.WARNING, "%s",
                         format_summary(summary))
            plc.stop_thread()
