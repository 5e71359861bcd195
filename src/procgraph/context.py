"""AgentContext: what the framework tells an agent about where it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

    from procgraph.registry import ModelRegistry


@dataclass
class AgentContext:
    """Where an agent runs: its graph, name, replica, folder, and its broker.

    ``graph``, ``agent`` and ``replica`` name it; ``consumer`` is its consumer name in its
    input groups; ``resolve_path(p)`` finds a file named in params relative to the graph file;
    ``models`` is the model registry on the agent's broker; ``redis()`` is a raw client of
    that broker (an escape hatch: prefer ``self.state``, ``models`` and ``procgraph.health``).
    """

    graph: str = "test"
    agent: str = "agent"
    replica: int = 0
    graph_dir: Path = field(default_factory=Path.cwd)
    redis_factory: Callable[[], redis.Redis] | None = None
    _models: ModelRegistry | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def consumer(self) -> str:
        """Consumer name of this replica in its consumer groups."""
        return f"{self.agent}-{self.replica}"

    def redis(self) -> redis.Redis:
        """A client for this agent's broker (an escape hatch; RuntimeError without one)."""
        if self.redis_factory is None:
            raise RuntimeError("this agent runs without a broker")
        return self.redis_factory()

    @property
    def models(self) -> ModelRegistry:
        """The model registry on this agent's broker (made on first use)."""
        if self._models is None:
            from procgraph.registry import ModelRegistry

            self._models = ModelRegistry(self.redis())
        return self._models

    def resolve_path(self, path: str | Path) -> Path:
        """A path from params, relative to the graph file's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.graph_dir / p)
