"""HmiAgent: params and the loopback/token rule, serving under AgentHarness, deploy attribute."""

from __future__ import annotations

import httpx
import pytest
from hmi_messages import decodes, outcome, preview, verdict
from procgraph.agents.hmi import HmiAgent
from procgraph.agents.hmi.agent import is_loopback
from pydantic import ValidationError

from procgraph.testing import AgentHarness


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("hmi.plant.local")


def test_refuses_non_loopback_bind_without_token() -> None:
    with pytest.raises(ValidationError, match="not loopback and no token"):
        HmiAgent.Params(host="0.0.0.0")
    with pytest.raises(ValidationError, match="not loopback and no token"):
        HmiAgent.Params(host="0.0.0.0", token="")  # an unset ${HMI_TOKEN} is no token
    token = "s3cret-0123456789"
    assert HmiAgent.Params(host="0.0.0.0", token=token).token == token
    assert HmiAgent.Params().host == "127.0.0.1"


def test_serves_public() -> None:
    assert HmiAgent.serves == "public"


def test_agent_serves_what_it_is_fed() -> None:
    with AgentHarness(HmiAgent, {"port": 0, "title": "Harnessed"}) as h:
        agent = h.agent
        assert isinstance(agent, HmiAgent) and agent.port > 0
        h.feed("previews", [preview("front", 1), preview("back", 1)])
        h.feed("verdicts", [verdict("front", 1), verdict("back", 1, defective=True)])
        h.feed("outcomes", outcome(1, "defective_back"))
        base = f"http://127.0.0.1:{agent.port}"
        snap = httpx.get(f"{base}/api/state", timeout=5).json()
        assert snap["title"] == "Harnessed"
        assert [c["name"] for c in snap["cameras"]] == ["back", "front"]
        assert snap["counters"]["defective"] == 1
        decodes(httpx.get(f"{base}/camera/back.jpg", timeout=5).content)
    assert not agent._server_thread.is_alive(), "teardown stops the server"
