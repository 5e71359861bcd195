"""The web app over a LiveState: the token rules, routes and events, on a real uvicorn server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from hmi_messages import decodes, outcome, preview, verdict
from procgraph.agents.hmi.app import create_app
from procgraph.agents.hmi.server import server_config
from procgraph.agents.hmi.state import LiveState

from pgtest_util import wait_for as wait_until


@contextlib.contextmanager
def serve(state: LiveState, token: str | None) -> Iterator[httpx.Client]:
    """The app on a real uvicorn server as the agent configures it (loopback, free port);
    yields a client for it."""
    server = uvicorn.Server(server_config(create_app(state, token), "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            yield client
    finally:
        state.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def token_client() -> Iterator[httpx.Client]:
    state = LiveState(title="T & <b>")
    state.add_preview(preview("front", 1))
    with serve(state, "s3cret/+") as client:
        yield client


def test_token_is_required_except_for_healthz(token_client: httpx.Client) -> None:
    c = token_client
    assert c.get("/healthz").status_code == 200
    for path in ("/", "/api/state", "/camera/front.jpg", "/defect/0.jpg", "/static/app.js",
                 "/events"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/api/state", params={"token": "wrong"}).status_code == 401
    assert c.get("/api/state", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/api/state", params={"token": "s3cret/+"}).status_code == 200
    assert c.get("/api/state", headers={"Authorization": "Bearer s3cret/+"}).status_code == 200
    r = c.get("/camera/front.jpg", params={"token": "s3cret/+"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    page = c.get("/", params={"token": "s3cret/+"}, follow_redirects=True)  # to a cookie
    assert page.status_code == 200
    assert "static/app.js\"" in page.text and "s3cret" not in page.text, "no token in the page"
    assert "T &amp; &lt;b&gt;" in page.text, "the title is escaped"
    assert c.get("/static/app.css", params={"token": "s3cret/+"}).status_code == 200


def test_routes_without_token() -> None:
    state = LiveState()
    state.add_preview(preview("front", 1))
    state.add_verdict(verdict("front", 1, defective=True))
    state.add_outcome(outcome(1, "defective_front", cameras=("front",)))
    with serve(state, None) as c:
        snap = c.get("/api/state").json()
        assert snap["counters"]["parts"] == 1 and snap["cameras"][0]["name"] == "front"
        img = c.get("/camera/front.jpg")
        assert img.headers["cache-control"] == "no-store"
        assert img.headers["x-content-type-options"] == "nosniff"
        decodes(img.content)
        assert c.get("/camera/nope.jpg").status_code == 404
        decodes(c.get("/defect/0.jpg").content)
        assert c.get("/defect/5.jpg").status_code == 404
        with c.stream("GET", "/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            for line in events.iter_lines():
                if line.startswith("data: "):
                    assert '"parts": 1' in line
                    break
            state.close()  # ends the stream
