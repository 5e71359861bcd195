"""Settings from the environment: every ``PROCGRAPH_*`` variable is read here and only here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from procgraph.constants import ENV_PREFIX


class Settings(BaseSettings):
    """What the environment tells procgraph (variable names in procgraph.constants).

    Read it with :func:`load_settings`; it is cheap, so callers read it when they need it
    rather than caching a copy that a test or a parent process may have changed since.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    brokers: dict[str, str] = Field(
        default_factory=dict, description="broker URLs given by the supervisor (JSON)")
    supervised: bool = Field(False, description="running under the procgraph supervisor")
    restarts: int = Field(0, ge=0, description="restarts of this replica so far")
    redis: str | None = Field(None, description="URL of the embedded broker, for tools")
    replica: int | None = Field(None, ge=0, description="replica index from an orchestrator")
    import_timeout_s: float | None = Field(
        None, gt=0, description="seconds an agent module's import may take "
        "(unset: procgraph.graph.imports.IMPORT_TIMEOUT_S, 30)")
    image_cache: str | None = Field(
        None, description="cache folder of procgraph image build (default ~/.cache/procgraph)")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="a replica's log level (the supervisor sets it per agent)")
    shm_keys: dict[str, str] = Field(
        default_factory=dict, description="broker name -> what names it in shared-memory "
        "file names (the supervisor sets it for the embedded brokers it owns)")
    forkserver: bool = Field(
        True, description="fork process replicas from the line's fork server "
        "(procgraph.forkserver); 0 spawns each as a new process")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def load_settings() -> Settings:
    """The settings as the environment gives them now."""
    return Settings()
