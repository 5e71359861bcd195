"""A producer-owned ring of frame slots in one shared-memory file (``/dev/shm``).

The file holds everything a restarted producer or a reader needs, so nothing about a slot
lives only in one process's memory:

- a header (4 KiB): magic, layout version, ``ring_id`` (random, chosen when the file is
  made: a reference to a file made later never matches), the slot count, the reader groups
  (one hold cell per slot and group), the data size, the next generation;
- a slot table: per slot its generation (0: free), offset and length in the data area, its
  state (written / sent / unknown) and the stream entry id once known;
- a hold table: per slot and reader group a cell ``(generation, pid)`` a reader sets while
  a decoded array is alive and clears when it is garbage-collected;
- the data area, page-aligned; payloads sit at 64-byte aligned offsets.

:class:`ShmRing` is the producer's side (allocate, write, mark sent, free);
:class:`RingView` is a reader's side (check a reference, hold, view, release). Which slots
may be freed is decided in :mod:`procgraph.delivery.claimcheck`.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

#: where rings live (tmpfs: RAM, gone at reboot)
SHM_DIR = Path("/dev/shm")
#: every ring file name starts with this, then ``<graph>.<broker>.<agent>.<replica>.<port>``
#: (``<broker>``: :func:`broker_digest` of the stream's broker)
RING_PREFIX = "procgraph."
MAGIC = b"PGRING01"
LAYOUT_VERSION = 1
HEADER_BYTES = 4096
GROUP_NAME_BYTES = 64
MAX_GROUPS = 48
ALIGN = 64
PAGE = 4096
#: magic, version, nslots, ngroups, pad, ring_id, data_bytes, data_offset, next_gen, pid
_HEAD = struct.Struct("<8sIIIIQQQQI")
_GROUPS_AT = 128
#: gen, offset, length, id_ms, id_seq, state
_SLOT = struct.Struct("<QQQQQI4x")
#: gen, pid
_CELL = struct.Struct("<QI4x")
_NEXT_GEN_AT = 8 + 4 * 4 + 8 + 8 + 8

FREE, WRITTEN, SENT, UNKNOWN = 0, 1, 2, 3


class RingError(Exception):
    """A ring file is missing, foreign or of another layout."""


def broker_location(url: str) -> str:
    """Where a broker is, from its URL, without user name or password: ``tcp:host:port/db``
    or ``unix:path?db=N`` (the scheme, TLS and other options do not change which streams
    are there)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    db = (query.get("db") or [""])[0]
    if parts.scheme == "unix":
        return f"unix:{parts.path}?db={int(db) if db.isdigit() else 0}"
    path = parts.path.strip("/")
    db = path if path.isdigit() else db
    host = (parts.hostname or "localhost").lower()
    try:
        port = str(parts.port or 6379)
    except ValueError:  # not a number: kept as written
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
    return f"tcp:{host}:{port}/{int(db) if db.isdigit() else 0}"


#: how a supervisor names an embedded broker it owns, instead of its URL (which changes with
#: the free port each run picks): ``line:<the line's state folder>:<broker name>``
LINE_KEY_PREFIX = "line:"


def broker_digest(url: str) -> str:
    """8 hex digits naming a broker in file names: its location (:func:`broker_location`),
    or for an embedded broker a supervisor owns, its line key (``line:...``, the same on
    every run of that line). The same stream on the same broker shares its files, one on
    another broker does not."""
    where = url if url.startswith(LINE_KEY_PREFIX) else broker_location(url)
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def ring_name(graph: str, agent: str, replica: int, port: str, broker_url: str) -> str:
    """The deterministic file name of one output port's ring (its stream on ``broker_url``)."""
    return f"{RING_PREFIX}{graph}.{broker_digest(broker_url)}.{agent}.{replica}.{port}"


def _layout(nslots: int, ngroups: int) -> tuple[int, int, int]:
    """(slot table offset, hold table offset, data offset) of a ring."""
    slots_at = HEADER_BYTES
    cells_at = slots_at + nslots * _SLOT.size
    data_at = cells_at + nslots * ngroups * _CELL.size
    return slots_at, cells_at, -(-data_at // PAGE) * PAGE


@dataclass
class Slot:
    """One slot as the table holds it."""

    index: int
    gen: int
    offset: int
    length: int
    id_ms: int
    id_seq: int
    state: int

    @property
    def end(self) -> int:
        """First byte after the payload, aligned."""
        return self.offset + -(-self.length // ALIGN) * ALIGN


class _Mapped:
    """An open, mapped ring file and its fixed layout."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        size = os.fstat(fd).st_size
        if size < HEADER_BYTES:
            raise RingError(f"{path} is too small to be a ring")
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.ino = os.fstat(fd).st_ino
        magic, version, nslots, ngroups, _, ring_id, data_bytes, data_at, _, _ = (
            _HEAD.unpack_from(self.mm, 0))
        if magic != MAGIC or version != LAYOUT_VERSION:
            self.mm.close()
            raise RingError(f"{path} is not a procgraph ring of layout {LAYOUT_VERSION}")
        self.nslots: int = nslots
        self.ngroups: int = ngroups
        self.ring_id: int = ring_id
        self.data_bytes: int = data_bytes
        self.slots_at, self.cells_at, self.data_at = _layout(self.nslots, self.ngroups)
        if data_at != self.data_at or size < data_at + data_bytes:
            self.mm.close()
            raise RingError(f"{path} has a damaged header")
        self.groups = [
            bytes(self.mm[_GROUPS_AT + i * GROUP_NAME_BYTES:
                          _GROUPS_AT + (i + 1) * GROUP_NAME_BYTES]).rstrip(b"\0").decode()
            for i in range(ngroups)]

    def slot(self, index: int) -> Slot:
        return Slot(index, *_SLOT.unpack_from(self.mm, self.slots_at + index * _SLOT.size))

    def cell_at(self, index: int, group: int) -> int:
        return self.cells_at + (index * self.ngroups + group) * _CELL.size

    def cell(self, index: int, group: int) -> tuple[int, int]:
        gen, pid = _CELL.unpack_from(self.mm, self.cell_at(index, group))
        return int(gen), int(pid)

    def put(self, at: int, record: bytes) -> None:
        """Write a packed record in one copy: struct.pack_into zeroes a record before it
        writes its fields, and a process reading it meanwhile (a slot checked by a reader,
        a hold cell by the producer) would see it zeroed."""
        self.mm[at:at + len(record)] = record

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # arrays still view it: unmapped at exit
            self.mm.close()


def pid_alive(pid: int) -> bool:
    """Whether a process of that id exists (a dead reader's holds count as released)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShmRing:
    """The producer's side of a ring: slots for payloads, reopened after a restart.

    :meth:`open` makes the file, or reopens one of the same layout and keeps every slot in
    it (a restarted producer never overwrites a slot still referenced). Slots written but
    not known as sent become ``UNKNOWN``: whoever reclaims decides from the stream.
    """

    def __init__(self, mapped: _Mapped, reopened: bool) -> None:
        self._m = mapped
        self.path = mapped.path
        self.reopened = reopened
        self.data_bytes = mapped.data_bytes
        self.groups = mapped.groups
        self.ring_id = mapped.ring_id
        self.live: dict[int, Slot] = {}
        for i in range(mapped.nslots):
            s = mapped.slot(i)
            if s.gen:
                if s.state == WRITTEN:  # sent or not: the dead producer cannot tell us
                    s.state = UNKNOWN
                    self._put(s)
                self.live[i] = s
        self._free_idx = [i for i in range(mapped.nslots - 1, -1, -1) if i not in self.live]
        gen = _HEAD.unpack_from(mapped.mm, 0)[8]
        self.next_gen = max([gen, *(s.gen + 1 for s in self.live.values())])

    @classmethod
    def open(cls, path: Path, data_bytes: int, nslots: int, groups: list[str]) -> ShmRing:
        """Reopen the ring at ``path`` if its layout matches, else make it anew."""
        groups = sorted(groups)[:MAX_GROUPS]
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return cls(_create(path, data_bytes, nslots, groups), False)
        try:
            mapped = _Mapped(path, fd)
        except RingError:
            mapped = None
        finally:
            os.close(fd)
        if mapped is not None and (mapped.data_bytes, mapped.nslots, mapped.groups) == (
                data_bytes, nslots, groups):
            return cls(mapped, True)
        if mapped is not None:
            mapped.close()
        # another layout (options or readers changed): references to it fail as "replaced"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return cls(_create(path, data_bytes, nslots, groups), False)

    # -- allocation -------------------------------------------------------------------------
    def allocate(self, nbytes: int) -> Slot | None:
        """A fresh slot of ``nbytes`` that overlaps no live slot, or None (ring full).

        First fit from the start of the data area: the pages in use stay few and warm
        (a page of tmpfs touched for the first time costs a fault and zeroing).
        """
        if not self._free_idx or nbytes > self.data_bytes:
            return None
        pos = 0
        for start, end in sorted((s.offset, s.end) for s in self.live.values()):
            if start >= pos + nbytes:
                break
            pos = max(pos, end)
        if pos + nbytes > self.data_bytes:
            return None
        gen = self.next_gen
        self.next_gen += 1
        struct.pack_into("<Q", self._m.mm, _NEXT_GEN_AT, self.next_gen)
        slot = Slot(self._free_idx.pop(), gen, pos, nbytes, 0, 0, WRITTEN)
        self._put(slot)
        self.live[slot.index] = slot
        return slot

    def write(self, slot: Slot, payload: memoryview | bytes) -> None:
        """Copy the payload into the slot's place in the data area."""
        at = self._m.data_at + slot.offset
        self._m.mm[at:at + slot.length] = payload

    def mark_sent(self, slot: Slot, entry_id: bytes) -> None:
        """Record the stream entry that references the slot."""
        ms, _, seq = entry_id.decode().partition("-")
        slot.id_ms, slot.id_seq, slot.state = int(ms), int(seq or 0), SENT
        self._put(slot)

    def mark_unknown(self, slot: Slot, bound: tuple[int, int]) -> None:
        """An entry id not known exactly: at most ``bound`` (the stream's last id)."""
        slot.id_ms, slot.id_seq, slot.state = bound[0], bound[1], UNKNOWN
        self._put(slot)

    def free(self, slot: Slot) -> None:
        """Give the slot back; a reference to it no longer resolves."""
        self.live.pop(slot.index, None)
        slot.gen, slot.state = 0, FREE
        self._put(slot)
        self._free_idx.append(slot.index)

    def held(self, slot: Slot) -> bool:
        """Whether a live reader process still holds the decoded array of this slot."""
        for g in range(self._m.ngroups):
            gen, pid = self._m.cell(slot.index, g)
            if gen == slot.gen and pid_alive(pid):
                return True
        return False

    @property
    def used_bytes(self) -> int:
        """Bytes of the data area in live slots."""
        return sum(s.end - s.offset for s in self.live.values())

    def _put(self, s: Slot) -> None:
        self._m.put(self._m.slots_at + s.index * _SLOT.size,
                    _SLOT.pack(s.gen, s.offset, s.length, s.id_ms, s.id_seq, s.state))

    def close(self) -> None:
        """Unmap (the file stays for a restarted producer and for readers)."""
        self._m.close()


def _create(path: Path, data_bytes: int, nslots: int, groups: list[str]) -> _Mapped:
    """Make a new ring file: sized, zeroed, the header (magic last) written."""
    data_at = _layout(nslots, len(groups))[2]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, data_at + data_bytes)
        with mmap.mmap(fd, HEADER_BYTES) as mm:
            for i, g in enumerate(groups):
                raw = g.encode()[:GROUP_NAME_BYTES]
                mm[_GROUPS_AT + i * GROUP_NAME_BYTES:_GROUPS_AT + i * GROUP_NAME_BYTES
                   + len(raw)] = raw
            _HEAD.pack_into(mm, 0, MAGIC, LAYOUT_VERSION, nslots, len(groups), 0,
                            secrets.randbits(63), data_bytes, data_at, 1, os.getpid())
        os.rename(tmp, path)  # a reader never sees a half-made ring
        return _Mapped(path, fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)


class RingView:
    """A reader's mapping of a ring: checks references, holds slots, views payloads."""

    def __init__(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise RingError(f"ring {path.name} is not in {path.parent} (its line stopped, "
                            "or the producer runs on another host or container)") from None
        try:
            self._m = _Mapped(path, fd)
        finally:
            os.close(fd)
        self.ring_id = self._m.ring_id
        self.ino = self._m.ino
        self._data = memoryview(self._m.mm).toreadonly()

    def group_index(self, group: str | None) -> int | None:
        """This group's hold column, or None (a reader the ring was not made for)."""
        if group is None or group not in self._m.groups:
            return None
        return self._m.groups.index(group)

    def matches(self, index: int, gen: int, offset: int, length: int) -> bool:
        """Whether slot ``index`` still holds generation ``gen`` at that place."""
        if not 0 <= index < self._m.nslots:
            return False
        s = self._m.slot(index)
        return (s.gen == gen and s.offset == offset and s.length == length
                and s.state != FREE and offset + length <= self._m.data_bytes)

    def hold(self, index: int, group: int, gen: int, pid: int) -> None:
        """Set this reader's hold cell on a slot (its generation and pid)."""
        self._m.put(self._m.cell_at(index, group), _CELL.pack(gen, pid))

    def release(self, index: int, group: int, gen: int, pid: int) -> None:
        """Clear the cell if it is still this reader's hold of that generation."""
        with contextlib.suppress(ValueError):  # unmapped at interpreter exit
            if self._m.cell(index, group) == (gen, pid):
                self._m.put(self._m.cell_at(index, group), _CELL.pack(0, 0))

    def view(self, offset: int, length: int) -> memoryview:
        """A read-only view of a payload (no copy)."""
        at = self._m.data_at + offset
        return self._data[at:at + length]


def remove_rings(graph: str, digests: Iterable[str], keep: set[str] | None = None,
                 folder: Path = SHM_DIR) -> list[str]:
    """Delete this graph's files of the brokers whose :func:`broker_digest` is in ``digests``
    (but those named in ``keep``); return their names. Files of the same graph name on
    other brokers (another line) are never touched."""
    removed: list[str] = []
    prefixes = tuple(f"{RING_PREFIX}{graph}.{d}." for d in digests)
    if not prefixes:
        return removed
    hidden = tuple(f".{p}" for p in prefixes)  # a half-made ring of a dead producer
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            name = entry.name
            if name.startswith(prefixes + hidden) and name not in (keep or set()):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                removed.append(name)
    return removed
