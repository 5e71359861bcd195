"""The operator web page: a Starlette app over a :class:`LiveState`.

Routes: ``/`` (the page), ``/static/*`` (its CSS and JS), ``/api/state`` (JSON snapshot),
``/events`` (Server-Sent Events pushing snapshots when something changed, at most
``1 / EVENT_PERIOD_S`` times a second), ``/camera/{name}.jpg`` (latest annotated preview),
``/defect/{i}.jpg`` (thumbnail of the i-th most recent reject, or of the one
with ``?uid=`` while it is kept), ``/favicon.ico`` and ``/healthz``.

With a token, every route but ``/healthz`` needs the HMI's cookie, ``?token=...`` or
``Authorization: Bearer ...``. A browser opening ``/?token=...`` gets the cookie (HttpOnly,
SameSite=Strict, Secure over https; its value is derived from the token, not the token) and
a redirect to the address without the token, so the token leaves the address bar, the
history and every later URL. Every answer, 401s and redirects included, carries the
security headers. JSON is ASCII (``\\uXXXX`` escapes), so no text from the line can make
an answer fail to encode.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
from procgraph.agents.hmi.state import LiveState, camera_name
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
OPEN_PATHS = frozenset({"/healthz", "/favicon.ico"})
COOKIE = "procgraph_hmi"
NO_STORE = {"Cache-Control": "no-store"}
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'"),
]


def cookie_value(token: str) -> str:
    """The HMI cookie's value for ``token``: an HMAC of it, so the cookie is not the token."""
    return hmac.new(token.encode("utf-8", "surrogatepass"), b"procgraph-hmi-cookie-v1",
                    hashlib.sha256).hexdigest()


def _cookies(scope: Scope) -> list[bytes]:
    """The values of every ``COOKIE`` cookie the request carries."""
    found = []
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            for part in value.split(b";"):
                key, _, val = part.strip().partition(b"=")
                if key == COOKIE.encode():
                    found.append(val.strip())
    return found


class TokenMiddleware:
    """Refuses requests without the right token (401), except for ``OPEN_PATHS``.

    The token is taken from the HMI cookie, the ``token`` query parameter or an
    ``Authorization: Bearer`` header and compared in constant time. ``GET /?token=`` with
    the right token answers a redirect that sets the cookie. Every response, refusals
    included, gets a few security headers.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode("utf-8", "surrogatepass") if token else None
        self.cookie = cookie_value(token).encode() if token else None

    def _allowed(self, scope: Scope, query: list[tuple[str, str]]) -> bool:
        if self.token is None or self.cookie is None or scope.get("path") in OPEN_PATHS:
            return True
        offered = [v.encode("utf-8", "surrogatepass") for k, v in query if k == "token"]
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                offered.append(value[7:].strip())
        good = any(hmac.compare_digest(t, self.token) for t in offered)
        return good or any(hmac.compare_digest(c, self.cookie) for c in _cookies(scope))

    def _cookie_redirect(self, scope: Scope, query: list[tuple[str, str]]) -> Response | None:
        """For ``GET /?token=<good>``: a redirect without the token that sets the cookie."""
        if (self.token is None or self.cookie is None or scope.get("path") != "/"
                or scope.get("method") not in ("GET", "HEAD")):
            return None
        offered = [v.encode("utf-8", "surrogatepass") for k, v in query if k == "token"]
        if not any(hmac.compare_digest(t, self.token) for t in offered):
            return None
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        redirect = Response(status_code=303, headers={
            "Location": "./" + (f"?{rest}" if rest else ""), **NO_STORE})
        redirect.set_cookie(COOKIE, self.cookie.decode(), path="/", httponly=True,
                            samesite="strict", secure=scope.get("scheme") == "https")
        return redirect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        if not self._allowed(scope, query):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            denied = Response("token required: open the page once with ?token=..., or send "
                              "Authorization: Bearer ...\n", status_code=401,
                              media_type="text/plain",
                              headers={"WWW-Authenticate": "Bearer", **NO_STORE})
            await denied(scope, receive, send_with_headers)
            return
        redirect = self._cookie_redirect(scope, query) if scope["type"] == "http" else None
        if redirect is not None:
            await redirect(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class AsciiJSONResponse(JSONResponse):
    """JSON as ASCII: lone surrogates and other text from the line travel as ``\\uXXXX``."""

    def render(self, content: Any) -> bytes:
        """Encode ``content`` (strict JSON: no NaN)."""
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def _page(state: LiveState) -> bytes:
    """The page, with its (escaped) title; its asset URLs carry no token."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    title = html.escape(state.title)
    return text.replace("{{TITLE}}", title).replace("{{QS}}", "").encode("utf-8", "replace")


def create_app(state: LiveState, token: str | None) -> Starlette:
    """Build the web app serving ``state``; with a ``token``, all but /healthz need it."""
    token = token or None

    async def index(request: Request) -> Response:
        return HTMLResponse(_page(state), headers=NO_STORE)

    async def api_state(request: Request) -> Response:
        return AsciiJSONResponse(state.snapshot(), headers=NO_STORE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "version": state.version}, headers=NO_STORE)

    async def favicon(request: Request) -> Response:
        return Response((STATIC_DIR / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

    async def camera(request: Request) -> Response:
        wanted = request.query_params.get("v", "")
        raw = request.scope.get("raw_path", b"").decode("latin-1")  # undecoded: %2F, %ED...
        raw = raw.removeprefix(request.scope.get("root_path", ""))
        ref = raw[len("/camera/"):-len(".jpg")] if raw.startswith("/camera/") else ""
        try:
            name = camera_name(ref)
        except UnicodeDecodeError:
            name = request.path_params["name"]
        got = state.camera_jpeg(name, int(wanted[:18]) if wanted.isdigit() else None)
        if got is None:
            return Response("no image from this camera yet\n", status_code=404,
                            media_type="text/plain", headers=NO_STORE)
        jpeg, version = got
        return Response(jpeg, media_type="image/jpeg",
                        headers={**NO_STORE, "X-Image-Version": str(version)})

    async def defect(request: Request) -> Response:
        uid = request.query_params.get("uid", "")
        jpeg = state.defect_jpeg(request.path_params["index"],
                                 int(uid[:18]) if uid.isdigit() else None)
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
        Route("/favicon.ico", favicon),
        Route("/camera/{name:path}.jpg", camera),
        Route("/defect/{index:int}.jpg", defect),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TokenMiddleware, token=token)])
    app.state.live = state
    return app
