"""procgraph.message: the envelope and type names of messages."""

from __future__ import annotations

import pytest
from pgtest_api_agents import (
    ApiFrame,
    ApiHotReading,
    ApiReading,
)
from pydantic import ValidationError

from procgraph.message import Hop


def test_message_envelope_and_type_names() -> None:
    a, b = ApiReading(value=1), ApiReading(value=1)
    assert a.id != b.id
    assert a.ts_ns <= b.ts_ns
    assert (a.key, a.trace) == ("", [])
    assert ApiReading.type_name == "ApiReading" and ApiReading.type_label() == "ApiReading/v1"
    assert ApiFrame.array_fields == frozenset({"image"})
    assert ApiReading.scalar_fields == frozenset({"value", "seq"})
    assert ApiHotReading.scalar_fields == frozenset({"value", "seq", "alarm"})
    with pytest.raises(ValidationError):
        ApiReading(value=1, unknown=2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Hop(agent="a", in_ns=1, out_ns=2).agent = "b"  # type: ignore[misc]
