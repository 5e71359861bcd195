"""HmiAgent: the operator screen of a line, served by uvicorn from inside the agent."""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from procgraph.agents.hmi.app import create_app
from procgraph.agents.hmi.health import LineHealthReader
from procgraph.agents.hmi.server import MAX_CONNECTIONS, raise_nofile, server_config
from procgraph.agents.hmi.state import MAX_CAMERAS, PREVIEW_BYTES, LiveState
from procgraph.agents.messages import PartOutcome, Preview, Verdict
from pydantic import Field, field_validator, model_validator

from procgraph import Agent, Input
from procgraph.errors import BrokerUnavailable, ProcgraphError
from procgraph.safetext import printable

HEALTH_PERIOD_S = 1.0
#: the shortest token accepted
MIN_TOKEN_CHARS = 16


#: a value that is only a reference to a variable, left for the machine that runs the line
#: (``procgraph deploy -e 'HMI_TOKEN=${HMI_TOKEN}'`` validates the graph with it)
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}")


def check_token(token: str, placeholder_ok: bool = True) -> str:
    """``token`` if it is usable as the HMI's token, else ValueError saying what is wrong.

    With ``placeholder_ok``, an unexpanded ``${VAR}`` passes (it is checked where it is
    expanded: the agent checks its token again when it starts).
    """
    if placeholder_ok and _PLACEHOLDER.fullmatch(token):
        return token
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"token is {len(token)} characters long; use at least "
                         f"{MIN_TOKEN_CHARS} characters (e.g. from `openssl rand -hex 16`)")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError("token holds spaces or control characters; use letters, digits and "
                         "punctuation (e.g. from `openssl rand -hex 16`)")
    return token


def masked_token(token: str) -> str:
    """The token as logs show it: its first two characters and its length."""
    return f"{token[:2]}\u2026({len(token)} chars)"


def is_loopback(host: str) -> bool:
    """True if ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HmiAgent(Agent):
    """Operator web page: live camera previews with verdicts, counters, defects, health.

    Wire ``previews``, ``verdicts`` and ``outcomes`` (all optional, all ``latest``). The
    page is served on ``http://host:port/``; outside loopback a ``token`` is required.
    The health table comes from :mod:`procgraph.health` on the agent's broker.
    """

    #: the page is meant to be opened from outside the line (deployments publish the port)
    serves: ClassVar[Literal["public", "internal"] | None] = "public"

    class Params(Agent.Params):
        """Where to listen, how to protect it, what to call it."""

        host: str = Field("127.0.0.1", description="address to bind; loopback unless a token")
        port: int = Field(8080, ge=0, le=65535, description="TCP port (0: any free port)")
        token: str | None = Field(None, description="access token (at least 16 characters): "
                                  "open the page once with ?token=, or send a Bearer header")
        title: str = Field("Inspection line", description="heading of the page")
        defects_kept: int = Field(12, ge=1, le=200, description="rejects shown as thumbnails")
        max_cameras: int = Field(MAX_CAMERAS, ge=1, le=1024,
                                 description="cameras kept; the one heard from longest ago "
                                 "is forgotten first")
        preview_mib: int = Field(PREVIEW_BYTES >> 20, ge=1, le=4096,
                                 description="MiB of pictures kept, previews and JPEGs")
        max_connections: int = Field(MAX_CONNECTIONS, ge=8, le=16384,
                                     description="HTTP connections open at once")
        yield_target_pct: float = Field(95.0, ge=0, le=100,
                                        description="yield target (%): the yield shows "
                                        "green at or above it, amber within 5 points, else red")
        plc_agent: str = Field("plc", description="the PLC writer agent, whose heartbeat and "
                               "backlog tell the PLC link state")

        @field_validator("token")
        @classmethod
        def _token_rules(cls, v: str | None) -> str | None:
            return check_token(v) if v else None

        @model_validator(mode="after")
        def _token_outside_loopback(self) -> HmiAgent.Params:
            if self.token is None and not is_loopback(self.host):
                msg = (f"host {self.host!r} is not loopback and no token is set: anyone on the "
                       "network could watch the line. Set params.token (e.g. "
                       "token: ${HMI_TOKEN}) or bind host 127.0.0.1")
                raise ValueError(msg)
            return self

    previews = Input(Preview, policy="latest", optional=True, doc="downscaled camera images")
    verdicts = Input(Verdict, policy="latest", optional=True, doc="classifier verdicts")
    outcomes = Input(PartOutcome, policy="latest", optional=True,
                     doc="part outcomes (as written to the PLC)")

    params: HmiAgent.Params

    @classmethod
    def endpoints(cls, params: Any) -> dict[str, str]:
        """The operator page's address (loopback when bound to every address)."""
        host = params.host if params.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        if not params.port:
            return {"HMI": f"{host}, a free port (its address is in this agent's log)"}
        extra = "  (open it once with ?token=...)" if params.token else ""
        return {"HMI": f"http://{host}:{params.port}/{extra}"}

    def setup(self) -> None:
        """Start the web server and the health poller (both daemon threads)."""
        import uvicorn

        p = self.params
        if p.token is None and not is_loopback(p.host):  # Params are usually validated
            raise ValueError(f"refusing to serve on {p.host!r} without a token")
        if p.token is not None:
            check_token(p.token, placeholder_ok=False)
        self.live = LiveState(p.title, self.context.graph, p.defects_kept, p.max_cameras,
                              p.preview_mib << 20, p.yield_target_pct, p.plc_agent)
        app = create_app(self.live, p.token)
        raise_nofile()
        self.server = uvicorn.Server(server_config(app, p.host, p.port, p.max_connections))
        self._server_thread = threading.Thread(target=self.server.run, name="hmi-http",
                                               daemon=True)
        self._server_thread.start()
        self._wait_started()
        self._poll_stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_health, name="hmi-health", daemon=True)
        self._poller.start()
        self.log.info("HMI at %s", self.masked_url)

    def _wait_started(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._server_thread.is_alive():
                raise RuntimeError(f"HMI web server could not start on "
                                   f"{self.params.host}:{self.params.port} (port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError("HMI web server did not start within "
                                   f"{timeout_s:g}s")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with ``port: 0``)."""
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.params.port

    @property
    def url(self) -> str:
        """The page's address, with the token if one is set (a secret: do not log it)."""
        host = self.params.host
        shown = f"[{host}]" if ":" in host else host
        qs = f"?token={quote(self.params.token, safe='')}" if self.params.token else ""
        return f"http://{shown}:{self.port}/{qs}"

    @property
    def masked_url(self) -> str:
        """The page's address as logs show it: ``?token=ab…(32 chars)``."""
        token = self.params.token
        return self.url.split("?")[0] + (f"?token={masked_token(token)}" if token else "")

    def teardown(self) -> None:
        """Stop the poller and the web server."""
        if hasattr(self, "_poll_stop"):
            self._poll_stop.set()
            self._poller.join(timeout=3)
        if hasattr(self, "server"):
            self.live.close()
            self.server.should_exit = True
            self._server_thread.join(timeout=5)

    # -- inputs -----------------------------------------------------------------------------
    def on_previews(self, msg: Preview) -> None:
        """Show the preview as the camera's live picture."""
        self.live.add_preview(msg)

    def on_verdicts(self, msg: Verdict) -> None:
        """Draw the verdict on its camera's picture."""
        self.live.add_verdict(msg)

    def on_outcomes(self, msg: PartOutcome) -> None:
        """Count the part; keep it as a thumbnail if rejected."""
        self.live.add_outcome(msg)

    # -- health -----------------------------------------------------------------------------
    def _poll_health(self) -> None:
        """Every ``HEALTH_PERIOD_S``: read heartbeats and group lag, feed the table."""
        try:
            client = self.context.redis()
        except (RuntimeError, ProcgraphError) as exc:  # no broker (in-process tests)
            self.log.debug("no health table: %s", exc)
            return
        reader = LineHealthReader(client, self.context.graph)
        failing = False
        while not self._poll_stop.wait(HEALTH_PERIOD_S):
            try:
                beats, lags = reader.read()
            except BrokerUnavailable as exc:
                self.log.debug("health poll failed: %s", exc)
                continue
            except Exception as exc:  # never let the health table take the page down
                if not failing:
                    self.log.warning("health poll failed: %s", printable(repr(exc)))
                failing = True
                continue
            failing = False
            self.live.set_health(beats, lags)
