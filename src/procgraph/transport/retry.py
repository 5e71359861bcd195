"""Riding out broker outages: exponential backoff, and ``retry`` for transient errors only."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from redis.exceptions import NoPermissionError

from procgraph.errors import TRANSIENT_ERRORS, refusal, refused
from procgraph.redact import redact

log = logging.getLogger("procgraph.transport")
T = TypeVar("T")
#: the errors that mean "the broker is unreachable right now" (retried, never fatal)
TRANSIENT = TRANSIENT_ERRORS


@dataclass
class Backoff:
    """Exponential backoff with a cap: 0.1 s, 0.2 s, ... up to ``max_s``."""

    start_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    _next: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; grows each call."""
        self._next = self.start_s if self._next == 0 else min(self._next * self.factor, self.max_s)
        return self._next

    def reset(self) -> None:
        """Start again from the shortest delay after a success."""
        self._next = 0.0


def retry(
    fn: Callable[[], T],
    what: str,
    stop: threading.Event | None = None,
    on_reconnect: Callable[[], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, backing off while the broker is unreachable.

    Only connection errors are retried; ``on_reconnect`` runs before each retry (e.g. to
    re-create consumer groups lost with a restarted broker). Raises InterruptedError when
    ``stop`` is set while waiting, and :class:`procgraph.errors.BrokerRefused` at once for a
    wrong password, an untrusted TLS certificate (redis-py calls both connection errors, but
    waiting cannot fix them) or a command the broker's ACL forbids (NOPERM).
    """
    backoff = Backoff()
    failures = 0
    while True:
        try:
            result = fn()
            if failures:
                log.warning("%s: broker is back after %d failed attempt(s)", what, failures)
            return result
        except NoPermissionError as exc:  # the ACL forbids it: waiting cannot fix that
            raise refused(what, refusal(exc) or str(exc)) from exc
        except TRANSIENT as exc:
            reason = refusal(exc)
            if reason is not None:
                raise refused(what, reason) from exc
            failures += 1
            delay = backoff.next_delay()
            if failures == 1 or failures % 20 == 0:
                log.warning("%s: broker unreachable (%s); retrying every <= %.1fs",
                            what, redact(str(exc)), delay)
            if stop is not None:
                if stop.wait(delay):
                    raise InterruptedError(what) from exc
            else:
                time.sleep(delay)
            if on_reconnect is not None:
                with contextlib.suppress(*TRANSIENT):
                    on_reconnect()
