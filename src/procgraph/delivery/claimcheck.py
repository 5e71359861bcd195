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

Reader side (:class:`ShmReader`, the codec's payload store for ``shm:`` references): the
decoded array is a read-only view of the mapped ring (no copy), held while it lives. A
reference whose slot was reused, whose host differs or whose ring is missing raises
:class:`StaleReference` (a :class:`~procgraph.errors.CodecError`: the entry is
dead-lettered with the reason).

Which ports use it, the reference format and the crash rules: docs/wire-format.md,
"Frames through shared memory".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from redis.exceptions import ResponseError

from procgraph import codec
from procgraph.constants import ARRAY_FIELD_PREFIX, HEADER_FIELD
from procgraph.errors import CodecError
from procgraph.settings import load_settings
from procgraph.transport.shmring import (
    RING_PREFIX,
    SENT,
    SHM_DIR,
    UNKNOWN,
    RingError,
    RingView,
    ShmRing,
    Slot,
    broker_digest,
    remove_rings,
    ring_name,
)

if TYPE_CHECKING:
    from procgraph.graph.plan import AgentPlan, GraphPlan, OutputPlan
    from procgraph.runtime.runner import AgentRunner
    from procgraph.transport.writer import Fields, StreamWriter

log = logging.getLogger("procgraph.claimcheck")

SCHEME = "shm"
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
_REF = re.compile(r"^shm:1:([0-9a-f]{16}):(procgraph\.[A-Za-z0-9_.-]{1,200}):([0-9a-f]{1,16}):"
                  r"(\d{1,6}):(\d{1,20}):(\d{1,20}):(\d{1,20})$")
Id = tuple[int, int]


class StaleReference(CodecError):
    """A shared-memory reference that no longer resolves (slot reused, ring gone, host)."""


@cache
def host_id() -> str:
    """This host's id in references: boot id and host name (a container has its own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{boot}\0{socket.gethostname()}".encode()).hexdigest()[:16]


def presence_name(graph: str, agent: str, port: str, group: str, broker_url: str) -> str:
    """The file a reading agent puts in /dev/shm to say it sees this host's shared memory
    (for the stream of ``agent.port`` on ``broker_url``)."""
    return f"{RING_PREFIX}{graph}.{broker_digest(broker_url)}.{agent}.{port}.reader-{group}"


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


# -- the reader -------------------------------------------------------------------------------
class ShmReader:
    """The codec's store for ``shm:`` references on this host.

    With a ``group`` the ring was made for, :meth:`get` returns a read-only array viewing
    the ring and holds the slot until that array is garbage-collected; without one (tap,
    record, other tools) it returns a copy, checked after copying.
    """

    scheme = SCHEME

    def __init__(self, group: str | None = None) -> None:
        self.group = group
        self._views: dict[str, RingView] = {}
        self._holds: dict[tuple[str, int, int], int] = {}
        self._lock = threading.RLock()

    def _view(self, name: str, ring_id: int) -> RingView:
        view = self._views.get(name)
        if view is None or view.ring_id != ring_id:
            try:
                view = RingView(SHM_DIR / name)
            except (RingError, OSError) as exc:
                raise StaleReference(f"frame in shared memory is gone: {exc}") from None
            self._views[name] = view
        if view.ring_id != ring_id:
            raise StaleReference(f"frame in shared memory is gone: ring {name} was made anew "
                                 "(its producer's line restarted with other options)")
        return view

    def put(self, data: memoryview) -> str:
        """Not here: a port's :class:`FrameStash` writes its ring."""
        raise CodecError("shared-memory payloads are written by an output's FrameStash")

    def get(self, ref: str) -> bytes | np.ndarray:
        """The payload of ``ref``: a held read-only view, or a checked copy."""
        m = _REF.match(ref)
        if m is None:
            raise StaleReference(f"not a shared-memory reference of version 1: {ref[:120]!r}")
        host, name = m.group(1), m.group(2)
        ring_id = int(m.group(3), 16)
        index, gen, offset, length = (int(m.group(i)) for i in range(4, 8))
        if host != host_id():
            raise StaleReference("frame is in shared memory on another host or container; "
                                 "set shm: false on the output (or run the reader beside it)")
        with self._lock:
            view = self._view(name, ring_id)
            if not view.matches(index, gen, offset, length):
                raise StaleReference(f"frame in shared memory was reclaimed (slot {index} "
                                     "reused) before this reader got it")
            column = view.group_index(self.group)
            if column is None:
                data = bytes(view.view(offset, length))
                if not view.matches(index, gen, offset, length):
                    raise StaleReference("frame in shared memory was reused while copied")
                return data
            key, pid = (name, index, gen), os.getpid()
            if key not in self._holds:
                view.hold(index, column, gen, pid)
                if not view.matches(index, gen, offset, length):
                    view.release(index, column, gen, pid)
                    raise StaleReference(f"frame in shared memory was reclaimed (slot {index}"
                                         " reused) before this reader got it")
            self._holds[key] = self._holds.get(key, 0) + 1
            arr = np.frombuffer(view.view(offset, length), dtype=np.uint8)
            weakref.finalize(arr, self._release, key, view, column)
            return arr

    def _release(self, key: tuple[str, int, int], view: RingView, column: int) -> None:
        with self._lock:  # with the lock: a decode of the same slot meanwhile holds again
            left = self._holds.get(key, 0) - 1
            if left > 0:
                self._holds[key] = left
                return
            self._holds.pop(key, None)
            view.release(key[1], column, key[2], os.getpid())

    @property
    def holding(self) -> int:
        """Slots this process holds now."""
        return len(self._holds)


#: the store of tools (tap, record): copies; an agent with inputs registers its own
_TOOLS = ShmReader()
codec.register_payload_store(_TOOLS)


def inline_refs(fields: Mapping[bytes, bytes]) -> tuple[dict[bytes, bytes], str | None]:
    """The entry with its shared-memory payloads put back inline (``a:<name>`` fields).

    Returns ``(fields, None)``, or the original fields and the reason when a payload could
    not be read (e.g. recorded on another host, or already reclaimed).
    """
    try:
        header = codec.read_header(fields)
    except CodecError:
        return dict(fields), None
    arrays: Any = header.get("arrays")
    refs = {n: d["ref"] for n, d in (arrays.items() if isinstance(arrays, dict) else [])
            if isinstance(d, dict) and isinstance(d.get("ref"), str)
            and d["ref"].startswith(f"{SCHEME}:")}
    if not refs:
        return dict(fields), None
    out = dict(fields)
    try:
        for name, ref in refs.items():
            out[f"{ARRAY_FIELD_PREFIX}{name}".encode()] = bytes(_TOOLS.get(ref))
            del arrays[name]["ref"]
    except CodecError as exc:
        return dict(fields), str(exc)
    out[HEADER_FIELD] = json.dumps(header, separators=(",", ":")).encode()
    return {HEADER_FIELD: out.pop(HEADER_FIELD), **out}, None


# -- the line's rings --------------------------------------------------------------------------
# Every name carries the digest of its stream's broker (``urls``: the line's broker URLs by
# name): another line of the same graph name on another broker has other files, and the
# clean-up touches only files of this line's brokers.
def line_ring_names(plan: GraphPlan, urls: Mapping[str, str]) -> set[str]:
    """The ring file names this graph's producers use (every node)."""
    return {ring_name(plan.name, a.name, i, o.port, urls[o.broker])
            for a in plan.agents.values() for i in range(a.replicas) for o in a.outputs
            if o.broker in urls}


def _presence_names(plan: GraphPlan, agents: list[AgentPlan],
                    urls: Mapping[str, str]) -> set[str]:
    """The presence files the readers among ``agents`` make."""
    return {presence_name(plan.name, i.source.partition(".")[0], i.source.partition(".")[2],
                          a.name, urls[i.broker])
            for a in agents for i in a.inputs if i.broker in urls}


def rings_still_needed(plan: GraphPlan, node: str | None,
                       client_of: Callable[[str], redis.Redis],
                       urls: Mapping[str, str]) -> set[str]:
    """The rings of ``node``'s producers (all when None) whose stream still has entries a
    reading group has not read or not acknowledged (``client_of``: a broker's client)."""
    needed: set[str] = set()
    for agent in plan.agents.values():
        if node is not None and agent.node != node:
            continue
        for out in agent.outputs:
            if out.broker not in urls:
                continue
            rings = {ring_name(plan.name, agent.name, i, out.port, urls[out.broker])
                     for i in range(agent.replicas)}
            if not any((SHM_DIR / r).exists() for r in rings):
                continue
            try:
                groups = client_of(out.broker).xinfo_groups(out.stream)
            except ResponseError:  # no such stream: nothing to read
                continue
            if any(g.get("pending") or g.get("lag") != 0 for g in groups):
                needed |= rings
    return needed


def clean_line_rings(plan: GraphPlan, node: str | None, stopping: bool,
                     keep: set[str] | None = None, *,
                     urls: Mapping[str, str]) -> list[str]:
    """The supervisor's clean-up of a line's rings; returns the names removed.

    Only files of this graph on this line's brokers (``urls``) are looked at. At start
    (``stopping=False``): rings that no producer of the plan uses (renamed ports, fewer
    replicas) and half-made ones; the others are kept, and their restarted producers keep
    honouring the slots still referenced; the presence files of the readers on ``node`` go
    (each makes its own again). At stop: the rings and presence files of the agents placed
    on ``node`` (all when None), but those named in ``keep``.
    """
    extra = keep
    elsewhere = [a for a in plan.agents.values() if node is not None and a.node != node]
    keep = _presence_names(plan, elsewhere, urls)
    if stopping:
        keep |= {ring_name(plan.name, a.name, i, o.port, urls[o.broker])
                 for a in elsewhere for i in range(a.replicas) for o in a.outputs
                 if o.broker in urls}
    else:
        keep |= line_ring_names(plan, urls)
    digests = {broker_digest(url) for url in urls.values()}
    return remove_rings(plan.name, digests, keep=keep | (extra or set()))
