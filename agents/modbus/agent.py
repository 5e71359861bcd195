"""The PLC writer agent: writes each joined part outcome to a PLC over Modbus."""

from __future__ import annotations

import time
from typing import Any, Literal

from procgraph.agents.messages import PartOutcome
from pydantic import Field

from procgraph import Agent, Input, Output


class ModbusPlcAgent(Agent):
    """Writes one outcome per part to a PLC over Modbus TCP (or RTU), in order.

    The outcomes come from the join (:class:`procgraph.agents.join.JoinAgent`) on a
    lossless edge. An outcome is acknowledged only once the PLC has the part: while the
    PLC is away the handler retries with backoff, so the parts wait in the stream, in
    order. Idempotent by key: keys written are kept in ``self.state.keyset("written")``
    (pruned after ``done_ttl_s``) and the Modbus client remembers the part the PLC holds,
    so a redelivered outcome is never written twice. Every part written is emitted on
    ``written`` with ``part_seq`` and ``plc_written_ns`` set. The handshake and register
    map are in :mod:`procgraph.agents.modbus.client` and ``docs/agents/modbus.md``; with
    ``slots`` > 1 the PLC has a mailbox of that many result slots, so a fast line is not held
    to one part per PLC scan. Run one replica: the handshake is a single conversation.
    """

    class Params(Agent.Params):
        host: str = Field("127.0.0.1", description="PLC address (Modbus TCP)")
        port: int = Field(502, ge=1, le=65535)
        rtu_device: str | None = Field(None, description="serial device for Modbus RTU")
        baudrate: int = 19200
        parity: Literal["N", "E", "O"] = "E"
        unit_id: int = Field(1, ge=0, le=255)
        base: int = Field(0, ge=0, description="first holding register (0-based)")
        use_coil_for_ready: bool = False
        ready_coil: int = 0
        slots: int = Field(1, ge=1, le=64, description="mailbox slots (1: the single-slot "
                           "handshake); the PLC program must implement as many")
        taken_seq: bool = Field(False, description="the PLC writes the seq of each part it "
                                "takes after the last slot (closes the restart window)")
        outcome_aliases: dict[str, str] = Field(
            default_factory=dict, description="outcome name -> register-map outcome name, "
            "e.g. {defective_top: defective_front} for a join with other view names")
        handshake_timeout_s: float = Field(5.0, gt=0)
        backoff_max_s: float = Field(5.0, gt=0)
        done_ttl_s: int = Field(86400, ge=60, description="how long written keys are kept")
        summary_every_s: float = Field(10.0, gt=0, description="log a line summary this often")

    params: Params

    outcomes = Input(PartOutcome, doc="joined part outcomes, in order (lossless)")
    written = Output(PartOutcome, doc="every outcome the PLC has, with part_seq set")

    @classmethod
    def endpoints(cls, params: Any) -> dict[str, str]:
        """The PLC this agent writes to."""
        where = params.rtu_device or f"{params.host}:{params.port}"
        slots = f", {params.slots} slots" if params.slots > 1 else ""
        return {"PLC": f"{where} unit {params.unit_id}, registers from {params.base}{slots}"}

    def setup(self) -> None:
        """Build the Modbus writer (it connects on the first part)."""
        from procgraph.agents.modbus.client import PlcWriter
        from procgraph.agents.modbus.registers import RegisterMap

        p = self.params
        regmap = RegisterMap(unit_id=p.unit_id, base=p.base, slots=p.slots,
                             taken_seq=p.taken_seq,
                             use_coil_for_ready=p.use_coil_for_ready, ready_coil=p.ready_coil)
        if p.rtu_device:
            self.plc = PlcWriter.rtu(p.rtu_device, p.baudrate, regmap, parity=p.parity)
            where = p.rtu_device
        else:
            self.plc = PlcWriter.tcp(p.host, p.port, regmap)
            where = f"{p.host}:{p.port}"
        self.written_keys = self.state.keyset("written")
        self.count = 0
        self.counts: dict[str, int] = {}
        self.last_summary = time.monotonic()
        self.last_prune = 0.0
        self.log.info("PLC at %s, unit %d, registers from %d%s", where, p.unit_id, p.base,
                      f", {p.slots} mailbox slots" if p.slots > 1 else "")

    def teardown(self) -> None:
        """Close the PLC connection."""
        plc = getattr(self, "plc", None)
        if plc is not None:
            plc.close()

    def tick(self) -> None:
        """Log the summary line every ``summary_every_s``; prune old written keys."""
        now = time.monotonic()
        if now - self.last_summary >= self.params.summary_every_s:
            self.last_summary = now
            self.log_summary()
        if now - self.last_prune > 60:
            self.last_prune = now
            self.written_keys.prune(self.params.done_ttl_s)

    def log_summary(self) -> None:
        """One console line: parts written, outcomes, yield."""
        if not self.count:
            self.log.info("no part written to the PLC yet")
            return
        ok = self.counts.get("ok", 0)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self.log.info("%d parts to the PLC: %s; yield %.1f%%", self.count, detail,
                      100.0 * ok / self.count)

    def register_outcome(self, o: PartOutcome) -> tuple[str, bool]:
        """``(outcome, reject)`` as the register map can hold them.

        An outcome name with no code (after ``outcome_aliases``) is written as
        ``incomplete`` with ``reject``: the PLC rejects a part it cannot be told about.
        """
        from procgraph.agents.modbus.registers import OUTCOME_CODES

        name = self.params.outcome_aliases.get(o.outcome, o.outcome)
        if name in OUTCOME_CODES:
            return name, o.reject
        self.log.error("part %s: outcome %r has no PLC code (known: %s); written as incomplete "
                       "with reject. Map it with the outcome_aliases param.", o.key, o.outcome,
                       ", ".join(OUTCOME_CODES))
        return "incomplete", True

    def on_outcomes(self, o: PartOutcome) -> None:
        """Write one part; return only once the PLC has it (looping while it is away)."""
        if o.key in self.written_keys:
            self.log.info("part %s already written to the PLC; not written again", o.key)
            return
        outcome, reject = self.register_outcome(o)
        seq = self._write(o.key, outcome, reject)
        self.written_keys.add(o.key)
        self.count += 1
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.written.send(PartOutcome(
            key=o.key, outcome=outcome, reject=reject, capture_ns=o.capture_ns,
            verdicts=o.verdicts, missing=o.missing, part_seq=seq,
            plc_written_ns=time.time_ns(), truth_defective=o.truth_defective))

    def _write(self, key: str, outcome: str, reject: bool) -> int:
        """Deliver one part, retrying with backoff; the PLC's ``seq`` for it."""
        from procgraph.agents.modbus.client import PlcUnavailable

        delay = 0.2
        attempt = 0
        while True:
            try:
                if not self.plc.connected:
                    self.plc.connect()
                known = self.plc.delivered_seq(key)
                if known is not None:  # the PLC had it before a restart of this agent
                    self.log.info("PLC already holds part %s as seq %d", key, known)
                    return known
                seq = self.plc.next_seq
                self.plc.write_outcome(seq, key, outcome, reject,
                                       timeout_s=self.params.handshake_timeout_s)
                return seq
            except PlcUnavailable as exc:
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    self.log.warning("PLC unavailable (%s); part %s waits, retry in %.1fs",
                                     exc, key, delay)
                if not self.sleep(delay):
                    raise  # stopping: the outcome stays unacknowledged
                delay = min(delay * 2, self.params.backoff_max_s)
