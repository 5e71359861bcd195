"""procgraph.context: AgentContext defaults, paths, broker and models."""

from __future__ import annotations

import pytest
from pgtest_api_agents import (
    Judge,
)

from procgraph import AgentContext


def test_context_defaults_and_paths(tmp_path) -> None:
    agent = Judge()
    assert agent.context.agent == "judge"
    assert agent.context.consumer == "judge-0"
    with pytest.raises(RuntimeError, match="without a broker"):
        agent.context.redis()
    ctx = AgentContext(graph="g", agent="cam", replica=1, graph_dir=tmp_path)
    assert ctx.consumer == "cam-1"
    assert ctx.resolve_path("models/m.onnx") == tmp_path / "models" / "m.onnx"
    assert ctx.resolve_path("/abs/m.onnx").as_posix() == "/abs/m.onnx"


def test_models_is_a_registry_on_the_agents_broker_made_once(valkey) -> None:
    import redis

    from procgraph.registry import ModelRegistry

    made: list[int] = []

    def factory() -> redis.Redis:
        made.append(1)
        return redis.Redis.from_url(valkey.url)

    ctx = AgentContext(agent="clf", redis_factory=factory)
    assert made == []  # lazily: nothing is connected until used
    models = ctx.models
    assert isinstance(models, ModelRegistry)
    assert ctx.models is models and made == [1]
    assert models.current("nothing-here") is None
    with pytest.raises(RuntimeError, match="without a broker"):
        AgentContext().models  # noqa: B018
