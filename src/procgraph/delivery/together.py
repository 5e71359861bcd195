"""A stateful source's send and the state change after it: written in one transaction.

A source that records in its state what it has sent (send, then
``self.state.put("next_seq", seq + 1)``) must not be killed between the two: restarted, it
would send that item again. So once a source has used its state in this process, a send to a
port on the state's broker is held, and written together with the next state change (a
``put``, ``delete``, or a map or keyset write) in one MULTI/EXEC: both are in the broker or
neither is. The source then sends each item exactly once, however it is killed.

A held send is also written, with whatever state changed meanwhile, by ``flush()`` and
``sleep()``, once :attr:`HeldSends.max_entries` entries or ``max_bytes`` bytes are held, and
when its port sends again before any state change: that port's sends are not followed by a
state change, so they are written at once from then on, until a state change follows one of
them again. Sends to ports on another broker are written at once (no transaction spans two
brokers). A held entry's arrays are copied, since the sender may reuse its buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from procgraph.state.buffer import Store
from procgraph.transport.retry import retry
from procgraph.transport.writer import Fields, StreamWriter, entry_bytes


class HeldSends:
    """Holds a stateful source's sends until its next state change, then writes both."""

    def __init__(self, writers: Mapping[str, StreamWriter], store: Store, client: redis.Redis,
                 stop: threading.Event, before_commit: Callable[[], None],
                 max_entries: int, max_bytes: int) -> None:
        self.writers = writers
        self.store = store
        self.stop = stop
        #: writes everything sent at once so far (they are in the broker before what is held)
        self.before_commit = before_commit
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ports = {p for p, w in writers.items() if w.client is client}
        self.lock = threading.RLock()
        #: per port, its one held entry (a second send on the port writes the first)
        self.held: dict[str, Fields] = {}
        self.nbytes = 0
        #: ports whose last send was not followed by a state change: written at once
        self.at_once: set[str] = set()
        #: ports written at once since the last state change
        self.sent_at_once: set[str] = set()
        store.on_change = self.state_changed

    def hold(self, port: str, fields: Fields) -> bool:
        """Hold ``fields`` for the next state change; False: write it at once instead."""
        if port not in self.ports or not self.store.used:
            return False
        with self.lock:
            if port in self.held:  # sent again, no state change between: not that kind
                self.commit()
                self.at_once.add(port)
            if port in self.at_once:
                self.sent_at_once.add(port)
                return False
            fields = {k: bytes(v) if isinstance(v, memoryview) else v for k, v in fields.items()}
            self.held[port] = fields
            self.nbytes += entry_bytes(fields)
            if len(self.held) >= self.max_entries or self.nbytes >= self.max_bytes:
                self.commit()
        return True

    def state_changed(self) -> None:
        """The source changed its state: write what is held with it, now."""
        with self.lock:
            self.at_once -= self.sent_at_once
            self.sent_at_once.clear()
            if self.held:
                self.commit()

    def commit(self) -> None:
        """Write the held sends and the state's unflushed changes in one transaction."""
        with self.lock:
            held, self.held, self.nbytes = self.held, {}, 0
            if not held:
                return
            self.before_commit()
            for port, fields in held.items():
                self.writers[port].prepare([fields], checked=True)  # sizes checked on send()

            def queue(pipe: Any) -> None:
                for port, fields in held.items():
                    pipe.execute_command(*self.writers[port].xadd_args(fields))

            replies = retry(lambda: self.store.flush(before=queue), "write sends and state",
                            self.stop, on_reconnect=self._on_reconnect(held))
            for (port, fields), entry_id in zip(held.items(), replies, strict=False):
                writer = self.writers[port]
                if writer.on_sent is not None:
                    writer.on_sent([fields], [entry_id])

    def _on_reconnect(self, held: Mapping[str, Any]) -> Callable[[], None]:
        hooks = [h for h in (self.writers[p].on_reconnect for p in held) if h is not None]

        def run_all() -> None:
            for hook in hooks:
                hook()
        return run_all

    def close(self) -> None:
        """Stop watching the state (what is held was committed by the caller)."""
        self.store.on_change = None
