"""Reading frames a producer on this host put in shared memory (``shm:`` references).

:class:`ShmReader` is the codec's payload store for ``shm:`` references: with the reading
group's column, the decoded array is a read-only view of the producer's mapped ring (no copy),
held while it lives; without one (tap, record and other tools) a checked copy. A reference
whose slot was reused, whose host differs or whose ring is missing raises
:class:`StaleReference` (a :class:`~procgraph.errors.CodecError`: the entry is dead-lettered
with the reason). The producer's side is :mod:`procgraph.delivery.claimcheck`; the format is in
docs/wire-format.md, "Frames through shared memory".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import weakref
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from procgraph import codec
from procgraph.constants import ARRAY_FIELD_PREFIX, HEADER_FIELD
from procgraph.errors import CodecError
from procgraph.transport.shmring import SHM_DIR, RingError, RingView

SCHEME = "shm"
_REF = re.compile(r"^shm:1:([0-9a-f]{16}):(procgraph\.[A-Za-z0-9_.-]{1,200}):([0-9a-f]{1,16}):"
                  r"(\d{1,6}):(\d{1,20}):(\d{1,20}):(\d{1,20})$")

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
