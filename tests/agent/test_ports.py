"""procgraph.ports: port declarations are checked; a port sends only its own type."""

from __future__ import annotations

import pytest
from pgtest_api_agents import (
    ApiFrame,
    ApiReading,
    ApiVerdict,
)

from procgraph import Agent, Input, Output
from procgraph.testing import AgentHarness


@pytest.mark.parametrize(
    ("factory", "error", "needle"),
    [
        (lambda: Input(dict), TypeError, "Message subclass"),  # type: ignore[arg-type]
        (lambda: Output(int), TypeError, "Message subclass"),  # type: ignore[arg-type]
        (lambda: Input(ApiReading, batch=0), ValueError, "batch"),
        (lambda: Input(ApiReading, max_wait_ms=-1), ValueError, "max_wait_ms"),
        (lambda: Input(ApiReading, policy="fastest"), ValueError, "policy"),  # type: ignore
        (lambda: Output(ApiReading, maxlen=0), ValueError, "maxlen"),
        (lambda: Output(ApiFrame, encoding={"image": "gif"}), ValueError, "encoding"),
    ],
)
def test_port_declarations_are_checked(factory, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        factory()


def test_sending_the_wrong_type_raises_type_error() -> None:
    class Wrong(Agent):
        readings = Input(ApiReading)
        verdicts = Output(ApiVerdict)

        def on_readings(self, msg: ApiReading) -> None:
            self.verdicts.send(msg)  # type: ignore[arg-type]

    with AgentHarness(Wrong) as h, pytest.raises(TypeError) as info:
        h.feed("readings", ApiReading(value=1))
    assert "'verdicts' carries ApiVerdict" in str(info.value)
    assert "ApiReading" in str(info.value)
    assert h.sent["verdicts"] == []
