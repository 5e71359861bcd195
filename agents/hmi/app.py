"""The operator web page: a Starlette app over a :class:`LiveState`.

Routes: ``/`` (the page), ``/static/*`` (its CSS and JS), ``/api/state`` (JSON snapshot),
``/events`` (Server-Sent Events pushing snapshots when something changed, at most
``1 / EVENT_PERIOD_S`` times a second), ``/camera/{name}.jpg`` (latest annotated preview),
``/defect/{i}.jpg`` (thumbnail of the i-th most recent reject, or of the one
with ``?uid=`` while it is kept) and ``/healthz``.

With a token, every route but ``/healthz`` needs ``?token=...`` or
``Authorization: Bearer ...``; the page passes on the token it was opened with.
"""

from __future__ import annotations

import hmac
import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, quote

import anyio
from procgraph.agents.hmi.state import LiveState
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
EVENT_PERIOD_S = 0.15
RESEND_S = 2.0
OPEN_PATHS = frozenset({"/healthz"})
NO_STORE = {"Cache-Control": "no-store"}
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'"),
]


class TokenMiddleware:
    """Refuses requests without the right token (401), except for ``OPEN_PATHS``.

    The token is taken from the ``token`` query parameter or an ``Authorization: Bearer``
    header and compared in constant time. Every response also gets a few security headers.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _allowed(self, scope: Scope) -> bool:
        if self.token is None or scope.get("path") in OPEN_PATHS:
            return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        offered = [t.encode() for t in query.get("token", [])]
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                offered.append(value[7:].strip())
        return any(hmac.compare_digest(t, self.token) for t in offered)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not self._allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            denied = Response("token required: add ?token=... or Authorization: Bearer ...\n",
                              status_code=401, media_type="text/plain",
                              headers={"WWW-Authenticate": "Bearer", **NO_STORE})
            await denied(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _page(state: LiveState, token: str | None) -> str:
    """The page, with its title and the query string its asset URLs need."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    qs = f"?token={quote(token, safe='')}" if token else ""
    return text.replace("{{TITLE}}", html.escape(state.title)).replace("{{QS}}", html.escape(qs))


def create_app(state: LiveState, token: str | None) -> Starlette:
    """Build the web app serving ``state``; with a ``token``, all but /healthz need it."""
    token = token or None

    async def index(request: Request) -> Response:
        return HTMLResponse(_page(state, token), headers=NO_STORE)

    async def api_state(request: Request) -> Response:
        return JSONResponse(state.snapshot(), headers=NO_STORE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "version": state.version}, headers=NO_STORE)

    async def camera(request: Request) -> Response:
        wanted = request.query_params.get("v", "")
        got = state.camera_jpeg(request.path_params["name"],
                                int(wanted) if wanted.isdigit() else None)
        if got is None:
            return Response("no image from this camera yet\n", status_code=404,
                            media_type="text/plain", headers=NO_STORE)
        jpeg, version = got
        return Response(jpeg, media_type="image/jpeg",
                        headers={**NO_STORE, "X-Image-Version": str(version)})

    async def defect(request: Request) -> Response:
        uid = request.query_params.get("uid", "")
        jpeg = state.defect_jpeg(request.path_params["index"], int(uid) if uid.isdigit() else None)
        if jpeg is None:
            return Response("no such defect\n", status_code=404, media_type="text/plain",
                            headers=NO_STORE)
        return Response(jpeg, media_type="image/jpeg", headers=NO_STORE)

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            last = -1
            quiet = 0.0
            while not state.closed.is_set():
                version = state.version
                if version != last:
                    last = version
                    quiet = 0.0
                    yield f"data: {json.dumps(state.snapshot(), allow_nan=False)}\n\n"
                elif quiet >= RESEND_S:  # ages move on; also detects gone clients
                    quiet = 0.0
                    yield f"data: {json.dumps(state.snapshot(), allow_nan=False)}\n\n"
                await anyio.sleep(EVENT_PERIOD_S)
                quiet += EVENT_PERIOD_S

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    routes = [
        Route("/", index),
        Route("/api/state", api_state),
        Route("/events", events),
        Route("/healthz", healthz),
        Route("/camera/{name}.jpg", camera),
        Route("/defect/{index:int}.jpg", defect),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TokenMiddleware, token=token)])
    app.state.live = state
    return app
