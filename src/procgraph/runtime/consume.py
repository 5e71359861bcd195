"""The consume loop of an agent with inputs: prefetch, decode, batch, handle, retry, ack.

Per entry read: decode it (any exception from decoding dead-letters the entry and never ends
the process), group it into the port's batch (``batch``/``max_wait_ms``), call the handler,
write what it sent, flush the agent state, then queue the ack
(:mod:`procgraph.delivery.acks`). A handler that raises is retried with backoff up to
``max_deliveries`` times (a failed batch then one entry at a time), and the entry is
dead-lettered after that. The entries of dead peers are claimed, and this replica's own are
kept from being claimed while it lives (:mod:`procgraph.delivery.claims`); a restart first
waits for its own heartbeat, then re-handles this replica's own pending entries
(:mod:`procgraph.delivery.recovery`).

A batch is cut when full, when its ``max_wait_ms`` is up, or as soon as the input is idle
(nothing more queued and the last read returned fewer entries than asked), so at low rates an
entry waits for no other. While more entries wait, what a handler call sent is written by a
write-behind thread (:class:`_WriteBehind`) while the next call runs, in call order, and its
entries are acked once written; otherwise, and for a call that changed the agent state, it
is written in line, after all before it. A write the broker refuses ends the replica either
way (the entries, not acked, are handled again after the restart).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import redis

from procgraph import codec
from procgraph.constants import DEFAULT_HEARTBEAT_S
from procgraph.context import LineCounts
from procgraph.delivery.claims import Claimer, EntryKeeper
from procgraph.delivery.deadletter import dead_letter
from procgraph.delivery.recovery import recover_own_pending
from procgraph.errors import BrokerUnavailable, CodecError
from procgraph.health import read_heartbeats
from procgraph.message import Message
from procgraph.runtime.readahead import ReadAhead
from procgraph.safetext import printable
from procgraph.transport.reader import Entry, GroupReader
from procgraph.transport.retry import Backoff, retry
from procgraph.transport.writer import Fields

if TYPE_CHECKING:
    from procgraph.runtime.outbox import Outbox
    from procgraph.runtime.runner import AgentRunner

log = logging.getLogger("procgraph.runtime")
READ_COUNT = 64
IDLE_BLOCK_MS = 100
#: queued acks go with the next read. When more entries are in hand before that read (a
#: backlog), or the outputs were written behind, the thread that queues an ack sends all
#: queued ones if none were sent for this long (the write-behind thread, or the handler
#: thread for calls written in line). What a replica killed had handled but not acknowledged
#: is delivered again.
ACK_FLUSH_S = 0.05
#: handler calls whose outputs may wait to be written while the next call runs (those
#: waiting together are written in one round trip)
WRITE_BEHIND = 4
#: errors from a handler that mean "the broker is away" (e.g. agent state read in a handler)
_BROKER_DOWN: tuple[type[BaseException], ...] = (
    BrokerUnavailable, redis.ConnectionError, redis.TimeoutError)
#: what a prepare hook may raise that is not the message's fault
_NOT_THE_MESSAGE: tuple[type[BaseException], ...] = (*_BROKER_DOWN, InterruptedError)


@dataclass
class _Pending:
    reader: GroupReader
    stream: str
    entry: Entry
    msg: Message
    in_ns: int
    #: what the handler gets: the message, or what the port's prepare hook made of it
    value: Any


#: an entry decoded (and prepared): (message, handler value), or the reason it goes to the
#: dead-letter stream
Decoded = tuple[Message, Any] | str


class _Prefetcher(threading.Thread):
    """Reads the next entries while the handler works on the current ones.

    Socket reads of large entries then overlap with handling (e.g. inference, which
    releases the GIL). At most one chunk per reader waits in the queue; entries read but
    not handled stay pending in the broker, so nothing is lost if the process dies. A chunk
    is ``(reader, entries, short)``: ``short`` when the read returned fewer entries than
    asked (nothing more was waiting). Decoding (and prepare hooks) stay on the handler
    thread: done here, it holds the GIL while the handler wants it back from inference
    (measured slower); :class:`~procgraph.runtime.readahead.ReadAhead` (inputs on one
    broker) prepares ahead, one entry at a time.
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
                    try:  # a short read: nothing more was waiting (the input is idle)
                        self.out.put((self.reader, got, len(got) < READ_COUNT), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except InterruptedError:
            pass
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc
            self.stop.set()


def _write_sent(outbox: Outbox, collected: dict[str, list[Fields]]) -> None:
    """Write ``collected`` (from ``Outbox.take``): one pipelined batch per port."""
    for port, batch in collected.items():
        outbox.writers[port].send_many(batch, checked=True)  # sizes checked on send()


_Job = tuple[dict[str, list[Fields]], str, list[_Pending], dict[str, int]]


def _log_write_failed(exc: BaseException) -> None:
    log.error("writing the outputs of a handler call failed: %s", printable(repr(exc)))


class _WriteFailed(Exception):
    """The broker refused a handler call's outputs written in line (e.g. the output key is
    not a stream): as when they are written behind, the replica ends and the entries, not
    acked, are handled again after the restart; it is not the message's fault."""

    def __init__(self, error: redis.ResponseError) -> None:
        super().__init__(str(error))
        self.error = error


class _WriteBehind(threading.Thread):
    """Writes what handler calls sent, in call order, while the next call runs; then acks.

    At most ``WRITE_BEHIND`` calls wait (the handler then blocks: backpressure from a slow
    or lossless stream still reaches it); the calls found waiting are written together, one
    pipelined batch per port in call order. A broker outage is waited out as before; a write
    that fails otherwise is kept in ``error``, nothing after it is written, and the consume
    loop raises it (the replica ends; its entries, not acked, are delivered again).
    """

    def __init__(self, outbox: Outbox, done: Callable[[str, list[_Pending]], None],
                 counts: LineCounts, stop: threading.Event) -> None:
        super().__init__(name="write-behind", daemon=True)
        self.outbox = outbox
        self.done = done
        self.counts = counts
        self.stop = stop
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=WRITE_BEHIND)
        self.error: BaseException | None = None

    def submit(self, collected: dict[str, list[Fields]], port: str,
               items: list[_Pending], counted: dict[str, int]) -> None:
        """Queue one call's outputs: they are written, then its entries acked and what it
        counted (``context.count``) released to the line counters."""
        self.jobs.put((collected, port, items, counted))

    def drain(self) -> None:
        """Wait until everything queued is written (and acked), or given up."""
        if self.is_alive():
            self.jobs.join()

    def close(self) -> None:
        """Write what is queued, then end the thread."""
        if self.is_alive():
            self.jobs.put(None)
            self.join()

    def _waiting(self) -> list[_Job | None]:
        """The next job (waits for it), and every job queued behind it."""
        jobs = [self.jobs.get()]
        while jobs[-1] is not None:
            try:
                jobs.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        return jobs

    def run(self) -> None:
        while True:
            jobs = self._waiting()
            work = [j for j in jobs if j is not None]
            try:
                if work and self.error is None:
                    merged: dict[str, list[Fields]] = {}
                    for collected, _, _, _ in work:
                        for port, batch in collected.items():
                            merged.setdefault(port, []).extend(batch)
                    _write_sent(self.outbox, merged)
                    for _, port, items, counted in work:
                        self.done(port, items)
                        self.counts.release(counted)
            except InterruptedError as exc:  # stopped during an outage: delivered again
                self.error = exc
            except BaseException as exc:  # handed to the consume loop, which re-raises it
                _log_write_failed(exc)
                self.error = exc
                self.stop.set()
            finally:
                for _ in jobs:
                    self.jobs.task_done()
            if jobs[-1] is None:
                return


class Consumer:
    """Runs the consume loop of one replica over its runner's readers and outbox."""

    def __init__(self, runner: AgentRunner) -> None:
        self.r = runner
        self.stop = runner.stop_event
        self.binding = runner.binding
        self.agent = runner.agent
        self.inputs = type(runner.agent).inputs
        self.consumer = runner.agent.context.consumer
        self._batches: dict[str, list[_Pending]] = {p: [] for p in self.inputs}
        self._batch_started: dict[str, float] = {}
        #: per reader: its last read was short (fewer entries than asked)
        self._short: dict[int, bool] = {id(rd): True for rd in runner.readers}
        #: entries wait behind the call being made (the rest of its chunk, or a full read
        #: that likely left more): only then are its outputs written behind
        self._queued = False
        self._behind = _WriteBehind(runner.outbox, partial(self._handled, behind=True),
                                    runner.agent.context.line_counts, self.stop)
        #: input port -> the agent's prepare_<port> hook (those ports are decoded ahead)
        self._prepare = self.binding.preparers()

    def run(self) -> None:
        """Keep own entries, recover own pending ones, then read and handle until stopped."""
        kept = threading.Event()  # the keeper runs until the last handler call returned
        keeper = EntryKeeper(self.r.readers, kept, self.r.spec.claim_idle_ms,
                             stalled=self._stalled)
        keeper.start()
        self._behind.start()
        try:
            self._run()
        finally:
            self._behind.close()
            kept.set()
        error = self._behind.error
        if error is not None and not isinstance(error, InterruptedError):
            raise error

    def _run(self) -> None:
        r = self.r
        claimers = [Claimer(rd, graph=r.plan.name, agent=r.spec.name,
                            heartbeats=r.client(r.spec.broker),
                            claim_idle_ms=r.spec.claim_idle_ms) for rd in r.readers]
        self._await_own_heartbeat()
        for reader in r.readers:
            retry(reader.ensure_groups, "create consumer groups", self.stop)
            recover_own_pending(
                reader, graph=r.plan.name, agent=r.spec.name, replica=r.replica,
                max_deliveries=r.spec.max_deliveries, stop=self.stop,
                handle_alone=partial(self._handle_alone, reader),
                on_dead=self._count_dead,
            )
        if len(r.readers) == 1:  # the common case: one broker, read in this thread
            self._run_one(r.readers[0], claimers)
            return
        chunks: queue.Queue[tuple[GroupReader, list[tuple[str, Entry]], bool]] = queue.Queue(
            maxsize=max(1, len(r.readers)))
        fetchers = [_Prefetcher(rd, chunks, self.stop) for rd in r.readers]
        for f in fetchers:
            f.start()
        last_claim = time.monotonic()
        claim_every = self._claim_every()
        while not self.stop.is_set():
            self.binding.touch()
            if not r.readers:  # every input is optional and none is wired
                self.stop.wait(IDLE_BLOCK_MS / 1000)
                self._tick()
                continue
            try:
                reader, got, short = chunks.get(timeout=self._block_ms() / 1000)
                self._short[id(reader)] = short
                self.process(reader, got)
            except queue.Empty:
                pass
            # the input is idle: nothing queued and every reader's last read was short
            idle = chunks.empty() and all(self._short.values())
            self._flush_due_batches(force=idle)
            self._tick()
            if time.monotonic() - last_claim > claim_every:
                last_claim = time.monotonic()
                for claimer in claimers:
                    self._process_claimed(claimer)
        for f in fetchers:
            f.join(timeout=2 * IDLE_BLOCK_MS / 1000 + 5)
            if f.error is not None:
                raise f.error
        self._flush_due_batches(force=True)

    def _claim_every(self) -> float:
        return min(DEFAULT_HEARTBEAT_S, max(0.5, self.r.spec.claim_idle_ms / 2000))

    def _run_one(self, reader: GroupReader, claimers: list[Claimer]) -> None:
        """The loop for inputs on one broker: a read blocks in this thread while idle (an
        entry is handled by the thread that read it), and after a full read the next chunk
        is read ahead while one is handled (:class:`~procgraph.runtime.readahead.ReadAhead`)."""
        ahead = ReadAhead(reader, READ_COUNT, self.stop,
                          decode=self._decode_ahead if self._prepare else None)
        waiting: list[tuple[str, Entry]] = []  # read ahead, not handled yet
        last_claim = time.monotonic()
        claim_every = self._claim_every()
        try:
            while not self.stop.is_set():
                self.binding.touch()
                got, waiting = (waiting, []) if waiting else (ahead.read(self._block_ms()), [])
                if got:
                    if len(got) >= READ_COUNT:  # a backlog: read the next chunk meanwhile
                        ahead.start()
                    self.process(reader, got, ahead.decoded_for if self._prepare else None)
                idle = False
                if self._batch_started:  # the input is idle: a short read, nothing after it
                    waiting = ahead.take()
                    idle = len(got) < READ_COUNT and not waiting
                self._flush_due_batches(force=idle)
                self._tick()
                if time.monotonic() - last_claim > claim_every:
                    last_claim = time.monotonic()
                    for claimer in claimers:
                        self._process_claimed(claimer)
        finally:
            ahead.close()
        self._flush_due_batches(force=True)

    def _stalled(self) -> bool:
        """No progress for ``heartbeat_timeout_s`` (the heartbeat is withheld as well)."""
        idle = time.monotonic() - self.binding.last_tick
        return idle > self.r.spec.heartbeat_timeout_s

    def _await_own_heartbeat(self) -> None:
        """Wait (a little) until this process's heartbeat is up, before re-reading pending.

        A sibling that saw the previous process's heartbeat gone re-reads it right before
        claiming, so it leaves this replica's entries alone from now on.
        """
        r = self.r
        deadline = time.monotonic() + 2 * DEFAULT_HEARTBEAT_S
        client = r.client(r.spec.broker)
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                beat = read_heartbeats(client, r.plan.name, [(r.spec.name, r.replica)])
            except BrokerUnavailable:
                return
            mine = beat.get((r.spec.name, r.replica))
            if mine is not None and mine.pid == os.getpid():
                return
            self.stop.wait(0.02)

    def _process_claimed(self, claimer: Claimer) -> None:
        """Handle what ``claimer`` took over from gone siblings, counting it per port."""
        got = claimer.claim()
        if not got:
            return
        log.info("took over %d pending entries of a gone replica", len(got))
        for stream, _ in got:
            self.r.stats_in[self.r.port_of[stream]].reclaimed += 1
        self.process(claimer.reader, got)

    def _tick(self) -> None:
        """``tick()``; what it sent is written at once, then its state changes."""
        self.agent.tick()
        if self.r.state.dirty:
            retry(self.r.state.flush, "write agent state", self.stop)

    def _handle_alone(self, reader: GroupReader, stream: str, entry: Entry) -> None:
        self.process(reader, [(stream, entry)])
        self._flush_due_batches(force=True)
        self._behind.drain()
        reader.flush_acks()

    def _count_dead(self, stream: str) -> None:
        self.r.stats_in[self.r.port_of[stream]].dead += 1

    def _block_ms(self) -> int:
        if not self._batch_started:
            return IDLE_BLOCK_MS
        now = time.monotonic()
        waits = [
            self.r.max_wait_ms[p] - (now - t0) * 1000
            for p, t0 in self._batch_started.items()
        ]
        return max(1, int(min(waits)))

    def decode(self, stream: str, entry: Entry) -> Decoded:
        """Decode an entry and run its port's prepare hook; a failure is the entry's
        (returned as the reason to dead-letter it), never the process's, except the broker
        being away or a stop during the hook (raised: not the message's fault)."""
        port = self.r.port_of[stream]
        try:
            msg = codec.decode(entry[1], self.inputs[port].type)
        except Exception as exc:
            return f"decode: {exc}" if isinstance(exc, CodecError) else (
                f"decode: {type(exc).__name__}: {exc}")
        prepare = self._prepare.get(port)
        if prepare is None:
            return msg, msg
        try:
            return msg, prepare(msg)
        except _NOT_THE_MESSAGE:
            raise
        except Exception as exc:
            return f"prepare_{port}: {type(exc).__name__}: {exc}"

    def _decode_ahead(self, stream: str, entry: Entry) -> Decoded | None:
        """On the read-ahead thread: entries of ports with a prepare hook, so that hook's
        work overlaps the handler's (others are decoded in the handler's thread: pure Python
        decoding there only contends for the interpreter lock)."""
        if self.r.port_of.get(stream) not in self._prepare:
            return None
        try:
            done: Decoded | None = self.decode(stream, entry)
        except _NOT_THE_MESSAGE:
            done = None  # prepared again in the handler's thread, which rides the outage out
        self.binding.touch()  # progress: the handler's thread may be waiting for this entry
        return done

    def _decode_here(self, stream: str, entry: Entry) -> Decoded | None:
        """``decode`` in this thread; a prepare hook that finds the broker away is tried
        again with backoff (not the message's fault); None: stopped meanwhile."""
        outage = Backoff()
        while True:
            try:
                return self.decode(stream, entry)
            except InterruptedError:
                return None
            except _BROKER_DOWN as exc:
                delay = outage.next_delay()
                log.warning("prepare_%s: broker unreachable (%s); retrying in %.1fs",
                            self.r.port_of[stream], exc, delay)
                if self.stop.wait(delay):
                    return None

    def process(self, reader: GroupReader, got: list[tuple[str, Entry]],
                decoded: Callable[[str, bytes], Decoded | None] | None = None) -> None:
        """Decode entries (unless ``decoded(stream, entry id)`` has them: decoded ahead) and
        hand them to their handlers (or batches)."""
        for n, (stream, entry) in enumerate(got, 1):
            if self.stop.is_set():
                break  # the rest stays pending and is delivered again
            self._queued = n < len(got) or len(got) >= READ_COUNT
            port = self.r.port_of[stream]
            in_ns = time.time_ns()  # its hop starts here, even if it was decoded ahead
            done = decoded(stream, entry[0]) if decoded is not None else None
            if done is None:
                done = self._decode_here(stream, entry)
                if done is None:
                    break  # stopped: the rest stays pending and is delivered again
            if isinstance(done, str):
                log.warning("dead-lettering entry %s of %s: %s", entry[0].decode(), stream,
                            printable(done))
                dead_letter(reader, stream, entry, done, self.consumer)
                self.r.stats_in[port].dead += 1
                continue
            msg, value = done
            item = _Pending(reader, stream, entry, msg, in_ns, value)
            if self.r.batch[port] == 1:
                self._run_handler(port, [item])
            else:
                batch = self._batches[port]
                batch.append(item)
                self._batch_started.setdefault(port, time.monotonic())
                if len(batch) >= self.r.batch[port]:
                    self._dispatch_batch(port)

    def _flush_due_batches(self, force: bool) -> None:
        now = time.monotonic()
        self._queued = not force  # forced: the input is idle (or the loop ends)
        for port, t0 in list(self._batch_started.items()):
            if force or (now - t0) * 1000 >= self.r.max_wait_ms[port]:
                self._dispatch_batch(port)

    def _dispatch_batch(self, port: str) -> None:
        items, self._batches[port] = self._batches[port], []
        self._batch_started.pop(port, None)
        if items:
            self._run_handler(port, items)

    def _call(self, port: str, items: list[_Pending], batched: bool) -> bool:
        """One handler attempt: outputs written, then state, or both dropped if it raised.

        Returns True when the outputs went to the write-behind thread (which acks the
        entries once they are written), False when they were written here.
        """
        payload: Any = [i.value for i in items] if batched else items[0].value
        mark = self.r.state.checkpoint()
        counts = self.agent.context.line_counts
        counts.begin_attempt()
        self.r.outbox.begin()
        try:
            t0 = time.perf_counter_ns()
            self.binding.handle(port, payload, [i.in_ns for i in items],
                                [i.msg for i in items])
            t1 = time.perf_counter_ns()
            end_ns = time.time_ns()
            collected = self.r.outbox.take()
            behind = self._write_behind_ok(collected)
            if not behind and (collected or self.r.state.dirty):
                self._behind.drain()  # after everything sent before, then the state
                try:
                    _write_sent(self.r.outbox, collected)
                except redis.ResponseError as exc:
                    _log_write_failed(exc)
                    raise _WriteFailed(exc) from exc
                retry(self.r.state.flush, "write agent state", self.stop)
        except BaseException:
            self.r.outbox.discard()  # outputs and state changes of a failed attempt
            self.r.state.rollback(mark)
            counts.end_attempt(keep=False)
            raise
        counted = counts.end_attempt(keep=not behind)  # written behind: released once written
        stats = self.r.stats_in[port]
        stats.handler_ms.observe((t1 - t0) / 1e6)
        for i in items:  # trace origin (the source's capture) -> end of this handler
            origin = i.msg.trace[0].in_ns if i.msg.trace else i.msg.ts_ns
            stats.e2e_ms.observe(max(0.0, (end_ns - origin) / 1e6))
            i.value = None  # handled: what prepare made is not needed for the acks
        if behind:
            self._behind.submit(collected, port, items, counted)
        return behind

    def _write_behind_ok(self, collected: dict[str, list[Fields]]) -> bool:
        """Whether this call's outputs may be written behind: there are some, more input waits
        (else there is nothing to overlap the write with: written in line, it goes out
        without a hand-over to another thread), the agent state is unchanged (it is written
        after the outputs, in line), the writer thread is well, and no entry had fields
        moved to shared memory (that bookkeeping stays on this thread)."""
        if (not collected or not self._queued or not self._behind.is_alive()
                or self._behind.error is not None or self.r.state.dirty):
            return False  # nothing to write (acked at once; acks need no order), or in line
        return not self.r.outbox.moved

    def _end_replica(self, failed: _WriteFailed) -> None:
        """End the consume loop as a failed write behind does: :meth:`run` raises the
        broker's error, nothing after it is written, the entries are not acked."""
        self._behind.error = failed.error
        self.stop.set()

    def _run_handler(self, port: str, items: list[_Pending]) -> None:
        stats = self.r.stats_in[port]
        max_deliveries = self.r.spec.max_deliveries
        batched = self.inputs[port].batch > 1
        attempt = 0
        outage = Backoff()
        while True:
            try:
                behind = self._call(port, items, batched)
                break
            except InterruptedError:
                raise
            except _WriteFailed as exc:
                self._end_replica(exc)
                return
            except _BROKER_DOWN as exc:
                # the broker is away, not the message at fault: retry without counting it
                delay = outage.next_delay()
                log.warning("handler on_%s: broker unreachable (%s); retrying in %.1fs, "
                            "not counted as a failed attempt", port, exc, delay)
                if self.stop.wait(delay):
                    return  # not acked: handled again after the restart
                continue
            except Exception as exc:
                attempt += 1
                stats.errors += 1
                if attempt < max_deliveries and not self.stop.is_set():
                    log.warning("handler on_%s failed (attempt %d/%d): %r", port, attempt,
                                max_deliveries, exc)
                    self.stop.wait(0.05 * 2 ** (attempt - 1))
                    continue
                if self.stop.is_set() and attempt < max_deliveries:
                    return  # not acked: redelivered after restart
                if len(items) > 1:
                    log.warning("batch of %d failed; retrying one by one", len(items))
                    for one in items:
                        self._run_handler_single_batch(port, one)
                    return
                log.exception("handler on_%s failed %d time%s: dead-lettering entry %s", port,
                              attempt, "" if attempt == 1 else "s", items[0].entry[0].decode())
                dead_letter(items[0].reader, items[0].stream, items[0].entry,
                            f"handler on_{port} failed {attempt} times: {exc!r}", self.consumer)
                stats.dead += 1
                return
        if not behind:
            self._handled(port, items)

    def _handled(self, port: str, items: list[_Pending], behind: bool = False) -> None:
        """Queue the acks of handled entries and count them; send the queued acks now if
        the next read is not next (more entries in hand, or written ``behind``: the handler's
        thread may be in a read already) and none were sent for ACK_FLUSH_S."""
        stats = self.r.stats_in[port]
        now = time.time_ns()
        for item in items:
            item.reader.ack_later(item.stream, item.entry[0])
            stats.count += 1
            stats.latency_ms.append((now - item.msg.ts_ns) / 1e6)
        if not (behind or self._queued):
            return  # this thread reads next, and the read takes the acks along
        for reader in {id(i.reader): i.reader for i in items}.values():
            if reader.acks.due(ACK_FLUSH_S):
                reader.flush_acks()

    def _run_handler_single_batch(self, port: str, item: _Pending) -> None:
        try:
            behind = self._call(port, [item], batched=True)
        except InterruptedError:
            raise
        except _WriteFailed as exc:
            self._end_replica(exc)
            return
        except _BROKER_DOWN:
            return  # the broker is away: left unacked, handled again later
        except Exception as exc:
            dead_letter(item.reader, item.stream, item.entry,
                        f"handler on_{port} failed: {exc!r}", self.consumer)
            self.r.stats_in[port].dead += 1
            return
        if not behind:
            self._handled(port, [item])
