"""ModelFollower: the thread behind ``ModelRegistry.follow()``.

The delivery rules, in one place: subscribe to the model's channel first, then compare the
current version with the one delivered last; wake on an event or every ``poll_s``; deliver
each new current version once (a rollback is a change too); a version whose bytes fail their
check or whose ``on_change`` raised is logged and never delivered again; a broker outage is
logged once, retried with backoff (0.1 s doubling up to 5 s) and the subscription renewed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from procgraph.constants import model_channel
from procgraph.errors import TRANSIENT_ERRORS, ModelRegistryError
from procgraph.registry.records import ModelChanged, ModelRecord
from procgraph.safetext import printable

if TYPE_CHECKING:
    from procgraph.registry.store import ModelRegistry

log = logging.getLogger("procgraph.registry")

_MAX_BACKOFF_S = 5.0
_STOP_SLICE_S = 0.25  # the longest a wait for an event runs before it looks at stop()


class ModelFollower:
    """A daemon thread delivering new current versions of one model; from ``follow()``.

    Rules: ``on_change`` runs on this thread, once per change of the current version; a
    version whose ``on_change`` raised (or whose bytes fail their check) is logged and not
    delivered again; a broker outage is logged and retried with backoff (up to 5 s), the
    subscription renewed. ``stop()`` ends it within a quarter of a second.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        name: str,
        on_change: Callable[[ModelRecord, bytes], object],
        *,
        poll_s: float,
        known_version: str | None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.poll_s = poll_s
        self._on_change = on_change
        #: (version, sha256) last delivered; sha256 None: the caller's ``known_version``
        self._have: tuple[str, str | None] | None = (
            (known_version, None) if known_version is not None else None)
        self._failed: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"model-follow-{name}",
                                        daemon=True)

    @property
    def version(self) -> str | None:
        """The version delivered last (or ``known_version`` until the first delivery)."""
        have = self._have
        return have[0] if have is not None else None

    def start(self) -> None:
        """Start the thread (``follow()`` does it)."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end: within 0.25 s, or once a running ``on_change`` returns."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        pubsub: Any = None
        backoff = 0.1
        down_since: float | None = None
        while not self._stop.is_set():
            try:
                if pubsub is None:  # subscribe first, then check: no change slips between
                    pubsub = self.registry.client.pubsub(  # type: ignore[no-untyped-call]
                        ignore_subscribe_messages=True)
                    pubsub.subscribe(model_channel(self.name))
                self._check()
                if down_since is not None:
                    log.info("model registry reachable again after %.1f s: following %r",
                             time.monotonic() - down_since, self.name)
                    down_since, backoff = None, 0.1
                self._wait_event(pubsub)
            except TRANSIENT_ERRORS as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("model registry unreachable (%s): retrying %r", exc, self.name)
                else:
                    log.debug("model registry still unreachable (%s)", exc)
                _close_quietly(pubsub)
                pubsub = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception:  # a damaged record, say: keep following, do not die silently
                log.exception("following model %r failed; trying again in %.1f s", self.name,
                              self.poll_s)
                _close_quietly(pubsub)
                pubsub = None
                self._stop.wait(self.poll_s)
        _close_quietly(pubsub)

    def _wait_event(self, pubsub: Any) -> None:
        """Wait up to poll_s for an event; malformed or foreign ones are logged and ignored."""
        deadline = time.monotonic() + self.poll_s
        msg: Any = None
        while msg is None and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            msg = pubsub.get_message(timeout=min(left, _STOP_SLICE_S))  # stop() ends it soon
        if msg is None or msg.get("type") != "message":
            return
        try:
            event = ModelChanged.parse(msg["data"])
        except ValueError as exc:
            log.warning("ignoring a malformed event on %s: %s", model_channel(self.name), exc)
            return
        if event.name != self.name:
            log.warning("ignoring an event for model %r on the channel of %r", event.name,
                        self.name)
            return
        log.info("registry event: %s %s v%s", event.event, event.name, event.version)

    def _check(self) -> None:
        """Deliver the current version if it is new (transient errors propagate)."""
        rec = self.registry.current(self.name)
        if rec is None:
            return
        have = self._have
        if have is not None and have[0] == rec.version and have[1] in (None, rec.sha256):
            return
        if (rec.version, rec.sha256) in self._failed:
            return
        try:
            data = self.registry.fetch(rec.name, rec.version)
        except ModelRegistryError as exc:
            self._failed.add((rec.version, rec.sha256))
            log.error("model %s v%s cannot be fetched: %s; skipping it", rec.name, rec.version,
                      printable(exc))
            return
        try:
            self._on_change(rec, data)
        except Exception:
            self._failed.add((rec.version, rec.sha256))
            log.exception("model %s v%s was not taken (on_change raised); skipping it",
                          rec.name, rec.version)
            return
        self._have = (rec.version, rec.sha256)


def _close_quietly(pubsub: Any) -> None:
    """Close a pub/sub connection, ignoring errors of a broker that is gone."""
    if pubsub is not None:
        with contextlib.suppress(Exception):
            pubsub.close()


__all__ = ["ModelFollower"]
