"""Runs one replica of one agent: reading, decoding, dispatch, acks, heartbeats."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis

from procgraph import codec
from procgraph.agent import Agent, AgentContext
from procgraph.constants import DEFAULT_HEARTBEAT_S, heartbeat_key
from procgraph.errors import CodecError
from procgraph.graph import AgentPlan, GraphPlan, import_agent
from procgraph.message import Message
from procgraph.transport import (
    TRANSIENT,
    Entry,
    GroupReader,
    ReadSpec,
    StreamWriter,
    WriterConfig,
    connect,
    retry,
)
from procgraph.yamlmarks import Marked

log = logging.getLogger("procgraph.runtime")
READ_COUNT = 64
IDLE_BLOCK_MS = 100


@dataclass
class PortStats:
    """Counters of one port, published with the heartbeat."""

    count: int = 0
    errors: int = 0
    dead: int = 0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))

    def snapshot(self) -> dict[str, Any]:
        """JSON-able summary."""
        lat = sorted(self.latency_ms)
        p50 = lat[len(lat) // 2] if lat else None
        return {"count": self.count, "errors": self.errors, "dead": self.dead, "latency_ms": p50}


@dataclass
class _Pending:
    reader: GroupReader
    stream: str
    entry: Entry
    msg: Message
    in_ns: int


class _SourceBuffer:
    """Coalesces a source agent's sends into pipelined XADDs.

    Small messages wait at most ``linger_s`` (or until the source sleeps, or 64 are
    queued); a large one (>= 64 KB) goes out at once with whatever is queued before it.
    Order is kept. Backpressure still holds: a flush blocks while the stream is full.
    """

    MAX_ENTRIES = 64
    BIG_BYTES = 64 * 1024

    def __init__(self, writers: dict[str, StreamWriter], stop: threading.Event,
                 linger_s: float = 0.002) -> None:
        self.writers = writers
        self.stop = stop
        self.linger_s = linger_s
        self.items: list[tuple[str, Any]] = []
        self.first = 0.0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="send-buffer", daemon=True)
        self.thread.start()

    def add(self, port: str, fields: Any) -> None:
        """Queue one encoded entry; flush when full or when it is large."""
        nbytes = sum(len(v) if isinstance(v, bytes) else v.nbytes for v in fields.values())
        with self.cond:
            self.items.append((port, fields))
            if len(self.items) == 1:
                self.first = time.monotonic()
                self.cond.notify()
            if len(self.items) >= self.MAX_ENTRIES or nbytes >= self.BIG_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        """Write out everything queued now."""
        with self.cond:
            self._flush_locked()

    def _flush_locked(self) -> None:
        items, self.items = self.items, []
        start = 0
        for i in range(1, len(items) + 1):  # consecutive runs of one port, in order
            if i == len(items) or items[i][0] != items[start][0]:
                self.writers[items[start][0]].send_many([f for _, f in items[start:i]])
                start = i

    def _loop(self) -> None:
        with self.cond:
            while not self.stop.is_set():
                if not self.items:
                    self.cond.wait(0.1)
                    continue
                remaining = self.first + self.linger_s - time.monotonic()
                if remaining > 0:
                    self.cond.wait(remaining)
                    continue
                try:
                    self._flush_locked()
                except InterruptedError:
                    return


class _Prefetcher(threading.Thread):
    """Reads the next entries while the handler works on the current ones.

    Socket reads of large entries then overlap with handling (e.g. inference, which
    releases the GIL). At most one chunk per reader waits in the queue; entries read but
    not handled stay pending in the broker, so nothing is lost if the process dies.
    """

    def __init__(self, reader: GroupReader, out: queue.Queue[Any], stop: threading.Event):
        super().__init__(name=f"prefetch-{reader.consumer}", daemon=True)
        self.reader = reader
        self.out = out
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                got = self.reader.read(READ_COUNT, IDLE_BLOCK_MS)
                while got and not self.stop.is_set():
                    try:
                        self.out.put((self.reader, got), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except InterruptedError:
            pass
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc
            self.stop.set()


class AgentRunner:
    """Hosts one agent replica against real brokers until stopped."""

    def __init__(self, plan: GraphPlan, agent: str, replica: int, broker_urls: dict[str, str]):
        if agent not in plan.agents:
            raise KeyError(f"graph {plan.name!r} has no agent {agent!r}")
        self.plan = plan
        self.spec: AgentPlan = plan.agents[agent]
        self.replica = replica
        self.urls = broker_urls
        self._clients: dict[str, redis.Redis] = {}
        self.stop_event = threading.Event()
        marked = Marked(plan.file, None, {})  # type: ignore[arg-type]
        self.cls = import_agent(self.spec.class_path, marked, ())
        ctx = AgentContext(
            graph=plan.name, agent=agent, replica=replica, graph_dir=plan.graph_dir,
            redis_factory=lambda: self.client(self.spec.broker),
        )
        self.agent: Agent = self.cls(self.cls.Params.model_validate(self.spec.params), ctx)
        self.agent._stop = self.stop_event
        self.stats_in = {p: PortStats() for p in self.cls.inputs}
        self.writers: dict[str, StreamWriter] = {}
        self.encodings: dict[str, dict[str, tuple[str, int]]] = {}
        for out in self.spec.outputs:
            cfg = WriterConfig(out.stream, out.maxlen, out.max_bytes, tuple(out.lossless_groups))
            self.writers[out.port] = StreamWriter(self.client(out.broker), cfg, self.stop_event,
                                                  on_wait=self._alive)
            self.encodings[out.port] = {f: (e, out.quality) for f, e in out.encoding.items()}
        self.agent._bind_outputs(self._deliver)
        self.readers: list[GroupReader] = []
        by_broker: dict[str, list[ReadSpec]] = {}
        self.port_of: dict[str, str] = {}
        self.batch: dict[str, int] = {p: d.batch for p, d in self.cls.inputs.items()}
        self.max_wait_ms: dict[str, float] = {p: d.max_wait_ms for p, d in self.cls.inputs.items()}
        for inp in self.spec.inputs:
            self.batch[inp.port] = inp.batch
            self.max_wait_ms[inp.port] = inp.max_wait_ms
            by_broker.setdefault(inp.broker, []).append(
                ReadSpec(inp.stream, self.spec.name, inp.port, inp.start)
            )
            self.port_of[inp.stream] = inp.port
        for broker, specs in by_broker.items():
            self.readers.append(
                GroupReader(self.client(broker), specs, ctx.consumer, self.stop_event)
            )
        self._collect: dict[str, list[Any]] | None = None
        self._source_buffer: _SourceBuffer | None = None
        self._batches: dict[str, list[_Pending]] = {p: [] for p in self.cls.inputs}
        self._batch_started: dict[str, float] = {}

    def _alive(self) -> None:
        self.agent._tick = time.monotonic()

    # -- brokers ------------------------------------------------------------------------
    def client(self, broker: str) -> redis.Redis:
        """The (shared) client of a named broker."""
        if broker not in self._clients:
            url = self.urls.get(broker)
            if url is None:
                raise KeyError(f"no URL for broker {broker!r}; is the supervisor running it?")
            self._clients[broker] = connect(url)
        return self._clients[broker]

    def _deliver(self, port: str, msg: Message) -> None:
        fields = codec.encode(msg, self.encodings[port])
        if self._collect is not None:  # inside a handler: sent together when it returns
            self._collect.setdefault(port, []).append(fields)
        elif self._source_buffer is not None:
            self._source_buffer.add(port, fields)
        else:
            self.writers[port].send(fields)

    def _flush_outputs(self) -> None:
        collected, self._collect = self._collect, None
        for port, batch in (collected or {}).items():
            self.writers[port].send_many(batch)

    # -- heartbeats -----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        key = heartbeat_key(self.plan.name, self.spec.name, self.replica)
        client = self.client(self.spec.broker)
        started = time.time()
        while not self.stop_event.wait(DEFAULT_HEARTBEAT_S):
            stalled = time.monotonic() - self.agent._tick > self.spec.heartbeat_timeout_s
            if stalled:
                log.error("no progress for %.0fs: withholding heartbeat",
                          time.monotonic() - self.agent._tick)
                continue
            state = {
                "agent": self.spec.name, "replica": self.replica, "started": started,
                "replicas": self.spec.replicas, "pid": os.getpid(),
                "restarts": int(os.environ.get("PROCGRAPH_RESTARTS", "0")),
                "ts": time.time(),
                "inputs": {p: s.snapshot() for p, s in self.stats_in.items()},
                "outputs": {p: {"count": b.sent, "blocked_s": round(self.writers[p].blocked_s, 3)}
                            for p, b in self.agent._bound_outputs.items()},
            }
            with contextlib.suppress(TRANSIENT):
                client.set(key, json.dumps(state), px=int(DEFAULT_HEARTBEAT_S * 5000))

    # -- main -----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT."""
        def handler(signum: int, frame: Any) -> None:
            log.info("signal %d: stopping after the current message", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Set up, loop until stopped, tear down; acks are flushed on the way out."""
        hb = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        self.agent.setup()
        try:
            if self.agent.is_source:
                self._source_buffer = _SourceBuffer(self.writers, self.stop_event)
                self.agent._before_sleep = self._source_buffer.flush
                try:
                    self.agent.run()
                finally:
                    with contextlib.suppress(InterruptedError, *TRANSIENT):
                        self._source_buffer.flush()
            else:
                self._consume()
        except InterruptedError:
            pass
        finally:
            self.stop_event.set()
            try:
                for reader in self.readers:
                    reader.flush_acks()
            except (InterruptedError, *TRANSIENT):
                log.warning("could not flush acks; those entries will be delivered again")
            self.agent.teardown()
            with contextlib.suppress(*TRANSIENT):  # gone at once, not 5 s later
                key = heartbeat_key(self.plan.name, self.spec.name, self.replica)
                self.client(self.spec.broker).delete(key)

    def _consume(self) -> None:
        for reader in self.readers:
            retry(reader.ensure_groups, "create consumer groups", self.stop_event)
            self._drain_own_pending(reader)
        chunks: queue.Queue[tuple[GroupReader, list[tuple[str, Entry]]]] = queue.Queue(
            maxsize=max(1, len(self.readers)))
        fetchers = [_Prefetcher(r, chunks, self.stop_event) for r in self.readers]
        for f in fetchers:
            f.start()
        last_claim = time.monotonic()
        claim_every = max(0.5, self.spec.claim_idle_ms / 2000)
        while not self.stop_event.is_set():
            self.agent._tick = time.monotonic()
            if not self.readers:  # every input is optional and none is wired
                self.stop_event.wait(IDLE_BLOCK_MS / 1000)
                self.agent.tick()
                continue
            try:
                reader, got = chunks.get(timeout=self._block_ms() / 1000)
                self._process(reader, got)
            except queue.Empty:
                pass
            self._flush_due_batches(force=False)
            self.agent.tick()
            if time.monotonic() - last_claim > claim_every:
                last_claim = time.monotonic()
                for reader in self.readers:
                    self._process(reader, reader.claim_idle(self.spec.claim_idle_ms))
        for f in fetchers:
            f.join(timeout=2 * IDLE_BLOCK_MS / 1000 + 5)
            if f.error is not None:
                raise f.error
        self._flush_due_batches(force=True)

    def _drain_own_pending(self, reader: GroupReader) -> None:
        """Re-handle what this consumer had read but not acked before it restarted.

        These entries are handled one at a time, each acknowledged at once, with a marker
        in the broker naming the entry in hand. If the process dies again, the restarted
        replica knows which entry killed it (the others read with it are innocent) and
        dead-letters that entry once it has crashed or hung the process ``max_deliveries``
        times in all.
        """
        ctx = self.agent.context
        marker = f"pg:{ctx.graph}:inflight:{ctx.agent}:{ctx.replica}"
        crashes = f"pg:{ctx.graph}:crashes:{ctx.agent}"
        client = reader.client
        culprit = retry(lambda: client.get(marker), "read in-flight marker", self.stop_event)
        if culprit is not None:
            retry(lambda: client.hincrby(crashes, culprit, 1), "count crash", self.stop_event)
        announced = False
        while not self.stop_event.is_set():
            got = reader.read(READ_COUNT, 0, pending=True)
            if not got:
                break
            if not announced:
                announced = True
                log.info("re-handling pending entries left by an earlier run, one at a time")
            for stream, entry in got:
                if self.stop_event.is_set():
                    break
                entry_id = entry[0]
                count = int(retry(lambda e=entry_id: client.hget(crashes, e) or 0,
                                  "read crash count", self.stop_event))
                if count + 1 >= self.spec.max_deliveries:
                    reader.dead_letter(stream, entry, f"the handler crashed or hung the process "
                                       f"{count + 1} times on this entry", ctx.consumer)
                    self.stats_in[self.port_of[stream]].dead += 1
                else:
                    retry(lambda e=entry_id: client.set(marker, e), "mark entry", self.stop_event)
                    self._process(reader, [(stream, entry)])
                    self._flush_due_batches(force=True)
                    reader.flush_acks()
                if count:
                    retry(lambda e=entry_id: client.hdel(crashes, e), "clear", self.stop_event)
        retry(lambda: client.delete(marker), "clear in-flight marker", self.stop_event)

    def _block_ms(self) -> int:
        if not self._batch_started:
            return IDLE_BLOCK_MS
        now = time.monotonic()
        waits = [
            self.max_wait_ms[p] - (now - t0) * 1000
            for p, t0 in self._batch_started.items()
        ]
        return max(1, int(min(waits)))

    def _process(self, reader: GroupReader, got: list[tuple[str, Entry]]) -> None:
        for stream, entry in got:
            if self.stop_event.is_set():
                break  # the rest stays pending and is delivered again
            port = self.port_of[stream]
            spec = self.cls.inputs[port]
            batch_size = self.batch[port]
            in_ns = time.time_ns()
            try:
                msg = codec.decode(entry[1], spec.type)
            except CodecError as exc:
                log.warning("dead-lettering entry %s of %s: %s", entry[0].decode(), stream, exc)
                reader.dead_letter(stream, entry, f"decode: {exc}", self.agent.context.consumer)
                self.stats_in[port].dead += 1
                continue
            item = _Pending(reader, stream, entry, msg, in_ns)
            if batch_size == 1:
                self._run_handler(port, [item])
            else:
                batch = self._batches[port]
                batch.append(item)
                self._batch_started.setdefault(port, time.monotonic())
                if len(batch) >= batch_size:
                    self._dispatch_batch(port)

    def _flush_due_batches(self, force: bool) -> None:
        now = time.monotonic()
        for port, t0 in list(self._batch_started.items()):
            if force or (now - t0) * 1000 >= self.max_wait_ms[port]:
                self._dispatch_batch(port)

    def _dispatch_batch(self, port: str) -> None:
        items, self._batches[port] = self._batches[port], []
        self._batch_started.pop(port, None)
        if items:
            self._run_handler(port, items)

    def _run_handler(self, port: str, items: list[_Pending]) -> None:
        stats = self.stats_in[port]
        batched = self.cls.inputs[port].batch > 1
        attempt = 0
        while True:
            try:
                payload: Message | list[Message] = (
                    [i.msg for i in items] if batched else items[0].msg
                )
                self._collect = {}
                self.agent._handle(port, payload, items[0].in_ns)
                self._flush_outputs()
                break
            except InterruptedError:
                self._collect = None
                raise
            except Exception as exc:
                self._collect = None  # outputs of a failed attempt are dropped
                attempt += 1
                stats.errors += 1
                if attempt < self.spec.max_deliveries and not self.stop_event.is_set():
                    log.warning("handler on_%s failed (attempt %d/%d): %r", port, attempt,
                                self.spec.max_deliveries, exc)
                    self.stop_event.wait(0.05 * 2 ** (attempt - 1))
                    continue
                if self.stop_event.is_set() and attempt < self.spec.max_deliveries:
                    return  # not acked: redelivered after restart
                if len(items) > 1:
                    log.warning("batch of %d failed; retrying one by one", len(items))
                    for one in items:
                        self._run_handler_single_batch(port, one)
                    return
                log.exception("handler on_%s failed %d times: dead-lettering entry %s", port,
                              attempt, items[0].entry[0].decode())
                items[0].reader.dead_letter(items[0].stream, items[0].entry,
                                   f"handler on_{port} failed {attempt} times: {exc!r}",
                                   self.agent.context.consumer)
                stats.dead += 1
                return
        self._handled(port, items)

    def _handled(self, port: str, items: list[_Pending]) -> None:
        """Queue the acks of handled entries and count them."""
        stats = self.stats_in[port]
        now = time.time_ns()
        for item in items:
            item.reader.ack_later(item.stream, item.entry[0])
            stats.count += 1
            stats.latency_ms.append((now - item.msg.ts_ns) / 1e6)

    def _run_handler_single_batch(self, port: str, item: _Pending) -> None:
        try:
            self._collect = {}
            self.agent._handle(port, [item.msg], item.in_ns)
            self._flush_outputs()
        except Exception as exc:
            self._collect = None
            item.reader.dead_letter(item.stream, item.entry, f"handler on_{port} failed: {exc!r}",
                               self.agent.context.consumer)
            self.stats_in[port].dead += 1
            return
        self._handled(port, [item])


def configure_logging(agent: str, replica: int, supervised: bool) -> None:
    """Log lines name the agent and replica (the supervisor adds a coloured prefix)."""
    fmt = "%(levelname)s %(name)s: %(message)s" if supervised else (
        f"%(asctime)s %(levelname)s [{agent}-{replica}] %(name)s: %(message)s")
    logging.basicConfig(level=logging.INFO, format=fmt, force=True)
