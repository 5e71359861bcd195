"""procgraph.transport.retry: backoff, and retrying only transient broker errors."""

from __future__ import annotations

import threading

import pytest

import procgraph.transport as transport
from procgraph.errors import TRANSIENT_ERRORS, BrokerUnavailable
from procgraph.transport import TRANSIENT, Backoff, retry


def test_backoff_grows_to_its_cap_and_resets() -> None:
    b = Backoff(start_s=0.1, max_s=0.5)
    assert [b.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next_delay() == 0.1


def test_transient_is_the_public_error_tuple() -> None:
    assert TRANSIENT is TRANSIENT_ERRORS
    assert issubclass(BrokerUnavailable, TRANSIENT)


def test_retry_retries_transient_errors_only() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BrokerUnavailable("away")
        return "ok"

    assert retry(flaky, "flaky") == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        retry(lambda: (_ for _ in ()).throw(ValueError("real")), "real error")


def test_retry_stops_waiting_when_asked() -> None:
    stop = threading.Event()
    stop.set()

    def away() -> None:
        raise ConnectionError("down")

    with pytest.raises(InterruptedError):
        retry(away, "down", stop)


def test_package_keeps_the_names_other_code_imports() -> None:
    for name in ("connect", "retry", "Backoff", "TRANSIENT", "Entry", "GroupReader", "ReadSpec",
                 "StreamWriter", "WriterConfig"):
        assert hasattr(transport, name), name
