"""Helpers for tests (a module of its own: two conftest.py files cannot both be imported)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(cond: Callable[[], object], timeout_s: float = 20.0, what: str = "condition"):
    """Poll ``cond`` until truthy; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)
