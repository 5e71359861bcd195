"""The PLC agent: joins front and back verdicts per part and writes one outcome to the PLC."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from procgraph.agents.messages import PartOutcome, Verdict
from pydantic import Field

from procgraph import Agent, Input, Output


class ModbusPlcAgent(Agent):
    """Writes one outcome per part to a PLC over Modbus, after joining its verdicts.

    Verdicts of one part share a key. A verdict made more than ``window_ms`` after its
    frame's capture is late, so a slow classifier never passes a part. When both sides are
    in and on time the part gets ok / defective_front / defective_back / defective_both;
    otherwise ``incomplete`` (rejected by default). A side counts as missing once its
    camera's verdicts are past the part's capture time plus the window, or once the window
    has passed on the clock while this agent was reading (time spent waiting for the PLC
    does not count). A verdict arriving after its part was decided is ignored. The join
    state lives in the broker, so a restarted agent loses no half-joined part. A verdict is
    acknowledged only after the PLC accepted the part it completed; while the PLC is away
    the agent retries with backoff, in order. Keys already written are never written
    again. Run one replica.
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
        front_camera: str = "front"
        back_camera: str = "back"
        window_ms: float = Field(3000, gt=0, description="join window from capture time")
        incomplete_reject: bool = Field(True, description="fail-safe for a missing side")
        handshake_timeout_s: float = Field(5.0, gt=0)
        backoff_max_s: float = Field(5.0, gt=0)
        done_ttl_s: int = Field(86400, ge=60, description="how long written keys are kept")
        summary_every_s: float = Field(10.0, gt=0, description="log a line summary this often")

    verdicts = Input(Verdict, doc="verdicts of both cameras (fan-in)")
    outcomes = Output(PartOutcome, doc="every outcome written to the PLC")

    def setup(self) -> None:
        from procgraph.agents.modbus.plc_client import PlcWriter
        from procgraph.agents.modbus.registers import RegisterMap

        p = self.params
        regmap = RegisterMap(unit_id=p.unit_id, base=p.base,
                             use_coil_for_ready=p.use_coil_for_ready, ready_coil=p.ready_coil)
        if p.rtu_device:
            self.plc = PlcWriter.rtu(p.rtu_device, p.baudrate, regmap, parity=p.parity)
            where = p.rtu_device
        else:
            self.plc = PlcWriter.tcp(p.host, p.port, regmap)
            where = f"{p.host}:{p.port}"
        self.redis = self.context.redis()
        prefix = f"pg:{self.context.graph}:join:{self.context.agent}"
        self.pending_key = prefix + ":pending"
        # half-joined parts: kept in the broker (survives a restart), mirrored here so the
        # window check on every tick reads no broker
        self.pending: dict[str, dict[str, Any]] = {
            k.decode(): json.loads(v) for k, v in self.redis.hgetall(self.pending_key).items()}
        self.done_key = prefix + ":done"
        self.sides = {p.front_camera: "front", p.back_camera: "back"}
        self.written = 0
        self.watermark_ns: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.last_summary = time.monotonic()
        self.resumed_ns = time.time_ns()
        self.log.info("PLC at %s, unit %d, registers from %d; join window %.0f ms",
                      where, p.unit_id, p.base, p.window_ms)

    def teardown(self) -> None:
        plc = getattr(self, "plc", None)
        if plc is not None:
            plc.close()

    # -- join ---------------------------------------------------------------------------
    def on_verdicts(self, v: Verdict) -> None:
        """Add a verdict to its part; write the part when it is complete."""
        side = self.sides.get(v.camera)
        if side is None:
            self.log.warning("verdict from unknown camera %r (expected %s); ignored",
                             v.camera, ", ".join(self.sides))
            return
        self.watermark_ns[side] = max(self.watermark_ns.get(side, 0), v.capture_ns)
        if self.redis.zscore(self.done_key, v.key) is not None:
            self.log.warning("late verdict for part %s (%s) ignored: already decided",
                             v.key, side)
            return
        part = dict(self.pending.get(v.key, {}))
        part[side] = v.model_dump(mode="json")
        if "front" in part and "back" in part:
            self._write(v.key, part)
            return
        self.redis.hset(self.pending_key, v.key, json.dumps(part))
        self.pending[v.key] = part
        self.tick()

    def _capture_ns(self, part: dict[str, Any]) -> int:
        return min(int(x["capture_ns"]) for x in part.values())

    def _expired(self, part: dict[str, Any]) -> bool:
        """True when a missing side can no longer arrive in time."""
        window_ns = int(self.params.window_ms * 1e6)
        deadline = self._capture_ns(part) + window_ns
        for side in ("front", "back"):
            if side not in part and self.watermark_ns.get(side, 0) > deadline:
                return True
        waited_from = max(self._capture_ns(part), self.resumed_ns)
        return time.time_ns() - waited_from > window_ns

    def tick(self) -> None:
        """Give parts whose window ended the fail-safe outcome, oldest first."""
        if time.monotonic() - self.last_summary >= self.params.summary_every_s:
            self.last_summary = time.monotonic()
            self.log_summary()
        expired = [(self._capture_ns(part), key, part)
                   for key, part in self.pending.items() if self._expired(part)]
        for _, key, part in sorted(expired):
            self._write(key, part)

    def log_summary(self) -> None:
        """One console line: parts written, outcomes, yield."""
        if not self.written:
            self.log.info("no part written to the PLC yet")
            return
        ok = self.counts.get("ok", 0)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self.log.info("%d parts to the PLC: %s; yield %.1f%%", self.written, detail,
                      100.0 * ok / self.written)

    # -- decide and write ---------------------------------------------------------------
    def decide(self, part: dict[str, Any]) -> tuple[str, bool, list[str]]:
        """``(outcome, reject, missing sides)`` for a joined (or timed-out) part."""
        missing = [s for s in ("front", "back") if s not in part]
        window_ns = self.params.window_ms * 1e6
        late = [s for s, v in part.items() if v["ts_ns"] - v["capture_ns"] > window_ns]
        if missing or late:
            return "incomplete", self.params.incomplete_reject, missing
        front, back = part["front"]["defective"], part["back"]["defective"]
        outcome = {(False, False): "ok", (True, False): "defective_front",
                   (False, True): "defective_back", (True, True): "defective_both"}[(front, back)]
        return outcome, outcome != "ok", []

    def _write(self, key: str, part: dict[str, Any]) -> None:
        from procgraph.agents.modbus.plc_client import PlcUnavailable

        outcome, reject, missing = self.decide(part)
        verdicts = {s: Verdict.model_validate(v) for s, v in part.items()}
        delay = 0.2
        attempt = 0
        while True:
            try:
                if not self.plc.connected:
                    self.plc.connect()
                seq = self.plc.next_seq
                self.plc.write_outcome(seq, key, outcome, reject,
                                       timeout_s=self.params.handshake_timeout_s)
                break
            except PlcUnavailable as exc:
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    self.log.warning("PLC unavailable (%s); part %s waits, retry in %.1fs",
                                     exc, key, delay)
                if not self.sleep(delay):
                    raise  # stopping: the verdict stays unacknowledged
                delay = min(delay * 2, self.params.backoff_max_s)
                self.resumed_ns = time.time_ns()
        written_ns = time.time_ns()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.done_key, {key: time.time()})
        pipe.zremrangebyscore(self.done_key, 0, time.time() - self.params.done_ttl_s)
        pipe.hdel(self.pending_key, key)
        pipe.execute()
        self.pending.pop(key, None)
        self.written += 1
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        truths = [v.truth for v in verdicts.values()]
        truth = None if None in truths or missing else any(t != "ok" for t in truths)
        if outcome == "incomplete":
            self.log.warning("part %s incomplete (%s): fail-safe %s", key,
                             f"missing {', '.join(missing)}" if missing else "verdict too late",
                             "reject" if reject else "pass")
        latest = max(verdicts.values(), key=lambda v: v.ts_ns)
        self.outcomes.send(PartOutcome(
            key=key, part_seq=seq, outcome=outcome, reject=reject,
            capture_ns=self._capture_ns(part), verdicts=verdicts, missing=missing,
            plc_written_ns=written_ns, truth_defective=truth, trace=list(latest.trace),
        ))
