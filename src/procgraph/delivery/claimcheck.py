"""Same-host frames through shared memory: a claim-check tied to the stream's acks.

Producer side (:class:`FrameStash`, the ``Outbox.stash`` of a port): each raw array field of
at least :data:`MIN_BYTES` is copied into a slot of the port's ring
(:mod:`procgraph.transport.shmring`) and the entry carries a reference in its array
descriptor instead of the bytes. A ring that is full sends the entry inline, as without
shared memory: never a wait, never a drop.

Reclamation: a slot is free again once no reading group needs its entry (every group has
acknowledged it, or it was trimmed from the stream) and no live reader process holds the
decoded array (a hold cell in the ring; a dead pid's hold counts as released). The broker is
asked (``XINFO GROUPS``, ``XPENDING`` summary, ``XRANGE id id``) only when the ring is full.

Reader side: :mod:`procgraph.delivery.shmreader` (a read-only view of the ring, held while
it lives). The line's files in /dev/shm and their clean-up: :mod:`procgraph.delivery.shmfiles`.

Which ports use it, the reference format and the crash rules: docs/wire-format.md,
"Frames through shared memory".
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import ResponseError

from procgraph import codec
from procgraph.constants import ARRAY_FIELD_PREFIX, HEADER_FIELD
from procgraph.delivery.shmfiles import presence_name
from procgraph.delivery.shmreader import ShmReader, host_id
from procgraph.settings import load_settings
from procgraph.transport.shmring import (
    SENT,
    SHM_DIR,
    UNKNOWN,
    ShmRing,
    Slot,
    ring_name,
)

if TYPE_CHECKING:
    from procgraph.graph.plan import AgentPlan, GraphPlan, OutputPlan
    from procgraph.runtime.runner import AgentRunner
    from procgraph.transport.writer import Fields, StreamWriter

log = logging.getLogger("procgraph.claimcheck")

#: arrays of at least this many bytes go through shared memory; smaller ones stay inline
MIN_BYTES = 64 * 1024
#: a ring's default data size (a port's ``shm_mb`` changes it)
DEFAULT_RING_MB = 64.0
#: slots per ring (at most this many payloads referenced at once)
SLOTS = 256
#: after a reclaim that freed nothing, the broker is not asked again for this long
RETRY_RECLAIM_S = 0.002
#: past this fraction of the ring in use, a reclaim comes first (keeps the pages in use few
#: and warm; the rest of the ring is the reserve while readers lag)
SOFT_FILL = 0.25
Id = tuple[int, int]


def _id(entry_id: bytes | str) -> Id:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


# -- who uses shared memory ------------------------------------------------------------------
def uses_shm(plan: GraphPlan, agent: AgentPlan, out: OutputPlan) -> bool:
    """Whether ``agent``'s output ``out`` sends frames through shared memory.

    Only when the port (and graph) allow it, it has readers, and the producer and every
    reading agent run as processes (not containers) on the same node; else inline. At run
    time :class:`FrameStash` also waits, sending inline, until every reading agent has put
    its presence file beside the ring (one in a container or elsewhere never does).
    """
    if not out.shm or not out.readers:
        return False
    if (agent.runtime or "process") != "process":
        return False
    for name in out.readers:
        reader = plan.agents.get(name)
        if reader is None or reader.node != agent.node or (
                (reader.runtime or "process") != "process"):
            return False
    return SHM_DIR.is_dir()


# -- the producer ------------------------------------------------------------------------------
class FrameStash:
    """One output port's claim-check: moves large raw arrays into the port's ring.

    Call it with an encoded entry (the ``Outbox.stash`` hook); give :meth:`on_sent` to the
    port's writer (``StreamWriter.on_sent``). ``inline`` counts entries sent inline because
    the ring was full, ``stashed`` those that went through shared memory.
    """

    def __init__(self, ring: ShmRing | Callable[[], ShmRing], client: redis.Redis,
                 stream: str, groups: list[str], min_bytes: int = MIN_BYTES,
                 presence: list[Path] | None = None) -> None:
        self._ring = ring if isinstance(ring, ShmRing) else None
        self._open_ring = None if isinstance(ring, ShmRing) else ring
        self.client = client
        self.stream = stream
        self.groups = list(groups)
        self.min_bytes = min_bytes
        self.stashed = 0
        self.inline = 0
        self.reclaims = 0
        self._lock = threading.RLock()
        self._unsent: dict[int, tuple[Any, list[Slot]]] = {}  # id(entry) -> (entry, slots)
        self._next_reclaim = 0.0
        self._presence = list(presence or [])
        self._next_look = 0.0
        self._off = False
        self._prefix = ""
        if self._ring is not None:
            self._opened(self._ring)

    @property
    def ring(self) -> ShmRing:
        """The port's ring, made (or reopened) at the first frame large enough for it."""
        if self._ring is None:
            assert self._open_ring is not None
            self._ring = self._open_ring()
            self._opened(self._ring)
        return self._ring

    def _opened(self, ring: ShmRing) -> None:
        self._prefix = f"shm:1:{host_id()}:{ring.path.name}:{ring.ring_id:x}:"
        if any(s.state == UNKNOWN and (s.id_ms, s.id_seq) == (0, 0)
               for s in ring.live.values()):
            self._bound_unknown()

    def _bound_unknown(self) -> None:
        """Slots a dead producer wrote: their entry (if sent) is at most the stream's last."""
        try:
            info: Any = self.client.xinfo_stream(self.stream)
            bound = _id(info["last-generated-id"])
        except ResponseError:  # no stream: nothing references them
            bound = (0, 0)
        for s in list(self.ring.live.values()):
            if s.state == UNKNOWN and (s.id_ms, s.id_seq) == (0, 0):
                self.ring.mark_unknown(s, bound)

    def __call__(self, fields: Fields) -> Fields:
        """The entry to send: large raw arrays replaced by references (or as it was)."""
        big = [k for k, v in fields.items() if k.startswith(b"a:")
               and (len(v) if isinstance(v, bytes) else v.nbytes) >= self.min_bytes]
        if not big or self._off or (self._presence and not self._readers_here()):
            return fields
        if self._ring is None:
            try:
                self.ring  # noqa: B018  (made here, at the first large frame)
            except OSError as exc:
                log.warning("%s: no shared memory (%s); frames go inline", self.stream, exc)
                self._off = True
                return fields
        header = json.loads(bytes(fields[HEADER_FIELD]))
        arrays = header.get("arrays", {})
        out: dict[bytes, bytes | memoryview] = dict(fields)
        slots: list[Slot] = []
        with self._lock:
            for key in big:
                desc = arrays.get(key[len(ARRAY_FIELD_PREFIX):].decode())
                if not isinstance(desc, dict) or desc.get("encoding", "raw") != "raw":
                    continue
                payload = fields[key]
                nbytes = len(payload) if isinstance(payload, bytes) else payload.nbytes
                slot = self._allocate(nbytes)
                if slot is None:
                    self.inline += 1
                    continue
                self.ring.write(slot, payload)
                desc["ref"] = (f"{self._prefix}{slot.index}:{slot.gen}:{slot.offset}:"
                               f"{slot.length}")
                del out[key]
                slots.append(slot)
            if not slots:
                return fields
            out[HEADER_FIELD] = json.dumps(header, separators=(",", ":")).encode()
            entry = {HEADER_FIELD: out.pop(HEADER_FIELD), **out}
            self._unsent[id(entry)] = (entry, slots)
            self.stashed += 1
        return entry

    def _readers_here(self) -> bool:
        """Whether every reading agent has said it sees this /dev/shm (looked at twice a
        second until they all have)."""
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._presence = [p for p in self._presence if not p.exists()]
        self._next_look = now + 0.5
        return not self._presence

    def on_sent(self, entries: list[Fields], ids: list[bytes]) -> None:
        """Tie slots to the entry ids written; free slots of entries never sent."""
        with self._lock:
            for entry, entry_id in zip(entries, ids, strict=True):
                got = self._unsent.get(id(entry))
                if got is None or got[0] is not entry:
                    continue
                # entries stashed before this one and still unsent were discarded (a failed
                # handler attempt): their slots are no one's
                for key in list(self._unsent):
                    if key == id(entry):
                        break
                    for slot in self._unsent.pop(key)[1]:
                        self.ring.free(slot)
                del self._unsent[id(entry)]
                for slot in got[1]:
                    self.ring.mark_sent(slot, entry_id)

    def _allocate(self, nbytes: int) -> Slot | None:
        ring = self.ring
        slot = None
        if ring.used_bytes + nbytes <= ring.data_bytes * SOFT_FILL:
            slot = ring.allocate(nbytes)
        if slot is None and time.monotonic() >= self._next_reclaim:
            try:
                freed = self.reclaim()
            except (redis.RedisError, OSError) as exc:  # inline this time; asked again later
                log.debug("claim-check reclaim on %s failed: %s", self.stream, exc)
                freed = 0
            # at most one broker round per RETRY_RECLAIM_S while that frees nothing, and
            # per a quarter of it while readers are behind (each frees a few)
            self._next_reclaim = time.monotonic() + (
                RETRY_RECLAIM_S if not freed else RETRY_RECLAIM_S / 4)
        return slot or ring.allocate(nbytes)

    def reclaim(self) -> int:
        """Free every slot no group needs and no live reader holds; return how many."""
        if self._ring is None:
            return 0
        with self._lock:
            candidates = [s for s in self.ring.live.values() if s.state in (SENT, UNKNOWN)]
            if not candidates:
                return 0
            self.reclaims += 1
            needed = needed_entries(self.client, self.stream, self.groups,
                                    [((s.id_ms, s.id_seq), s.state == SENT)
                                     for s in candidates])
            freed = 0
            for slot, need in zip(candidates, needed, strict=True):
                if not need and not self.ring.held(slot):
                    self.ring.free(slot)
                    freed += 1
            return freed


def needed_entries(client: redis.Redis, stream: str, groups: list[str],
                   entries: list[tuple[Id, bool]]) -> list[bool]:
    """Per ``(entry id, exact)``: whether some reading group may still read it.

    A group needs an entry it has not been delivered yet, or one at or after the oldest of
    its pending entries; an exact id that is no longer in the stream (trimmed) is needed by
    no one. A non-exact id is an upper bound (after a producer restart).
    """
    try:
        infos: Any = client.xinfo_groups(stream)
    except ResponseError:  # no stream (a broker without its data): nothing to read
        return [False] * len(entries)
    by_name = {(g["name"].decode() if isinstance(g["name"], bytes) else g["name"]): g
               for g in infos}
    marks: list[tuple[Id, Id | None]] = []
    for name in groups:
        info = by_name.get(name)
        if info is None:
            continue  # not created yet: it starts after these entries
        oldest = None
        if info["pending"]:
            summary: Any = client.xpending(stream, name)
            if summary and summary["pending"] and summary["min"] is not None:
                oldest = _id(summary["min"])
        marks.append((_id(info["last-delivered-id"]), oldest))
    maybe = [any(e > delivered or (oldest is not None and e >= oldest)
                 for delivered, oldest in marks) for e, _ in entries]
    check = [i for i, (e, exact) in enumerate(entries) if maybe[i] and exact]
    if check:
        pipe = client.pipeline(transaction=False)
        for i in check:
            e = f"{entries[i][0][0]}-{entries[i][0][1]}"
            pipe.xrange(stream, min=e, max=e, count=1)
        for i, found in zip(check, pipe.execute(), strict=True):
            maybe[i] = bool(found)
    return maybe


def _names_of(runner: AgentRunner) -> dict[str, str]:
    """What names each broker in file names: the supervisor's line keys for the embedded
    brokers it owns (stable across runs), else the broker's URL."""
    keys = load_settings().shm_keys
    return {name: keys.get(name, url) for name, url in runner.urls.items()}


def attach(runner: AgentRunner) -> None:
    """Give each output of a replica that uses shared memory its stash; register the
    reader store for the agent's consumer group."""
    plan, spec = runner.plan, runner.spec
    names = _names_of(runner)
    if spec.inputs:
        codec.register_payload_store(ShmReader(group=spec.name))
        for inp in spec.inputs:
            src, _, port = inp.source.partition(".")
            url = names.get(inp.broker)
            if url is None:  # no broker to read it from: nothing to say
                continue
            with contextlib.suppress(OSError):
                (SHM_DIR / presence_name(plan.name, src, port, spec.name, url)).touch()
    for out in spec.outputs:
        if not uses_shm(plan, spec, out):
            continue
        writer: StreamWriter = runner.writers[out.port]
        url = names[out.broker]
        path = SHM_DIR / ring_name(plan.name, spec.name, runner.replica, out.port, url)
        size, readers = int(out.shm_mb * 2**20), list(out.readers)

        def ring(path: Path = path, size: int = size, readers: list[str] = readers) -> ShmRing:
            return ShmRing.open(path, size, SLOTS, readers)

        presence = [SHM_DIR / presence_name(plan.name, spec.name, out.port, r, url)
                    for r in out.readers]
        stash = FrameStash(ring, writer.client, out.stream, out.readers, presence=presence)
        runner.outbox.stash[out.port] = stash
        writer.on_sent = stash.on_sent


