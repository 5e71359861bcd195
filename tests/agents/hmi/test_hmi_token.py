"""Issue 9 item 13: the HMI token is not logged, leaves the URL for a cookie, is long enough."""

from __future__ import annotations

import logging

import httpx
import pytest
from hmi_messages import preview
from procgraph.agents.hmi import HmiAgent
from procgraph.agents.hmi.state import LiveState
from pydantic import ValidationError
from test_hmi_app import serve

from procgraph.testing import AgentHarness

TOKEN = "Zq8rT2vLmN4xW6yB0cD3eF5gH7jK9sPa"  # 32 characters
SECURITY = ("x-content-type-options", "referrer-policy", "x-frame-options",
            "content-security-policy")


def test_item13_token_is_masked_in_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9 item 13: the start line says ``token=Zq…(32 chars)``, never the token."""
    caplog.set_level(logging.DEBUG)
    with AgentHarness(HmiAgent, {"port": 0, "token": TOKEN}) as h:
        agent = h.agent
        assert isinstance(agent, HmiAgent)
        assert httpx.get(f"http://127.0.0.1:{agent.port}/?token={TOKEN}", timeout=5,
                         follow_redirects=True).status_code == 200
    lines = [r.getMessage() for r in caplog.records  # httpx logs the test's own requests
             if r.name.startswith(("procgraph", "uvicorn"))]
    assert any("HMI at http://127.0.0.1:" in m and "token=Zq\u2026(32 chars)" in m
               for m in lines), lines
    assert not any(TOKEN in m or TOKEN[4:20] in m for m in lines), lines


def test_item13_first_visit_with_token_moves_to_a_cookie() -> None:
    """Issue 9 item 13: ``/?token=`` answers a redirect to the address without it and sets
    an HttpOnly, SameSite=Strict cookie (Secure behind https) that is not the token; the page
    then needs no token in any URL."""
    state = LiveState()
    state.add_preview(preview("front", 1))
    with serve(state, TOKEN) as c:
        r = c.get("/", params={"token": TOKEN, "view": "2"})
        assert r.status_code == 303 and r.headers["location"] == "./?view=2"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
        assert "Secure" not in cookie and TOKEN not in cookie
        assert all(h in r.headers for h in SECURITY)
        assert c.cookies.get("procgraph_hmi")
        page = c.get("/")
        assert page.status_code == 200 and "token" not in page.text
        for path in ("/api/state", "/camera/front.jpg", "/static/app.js"):
            assert c.get(path).status_code == 200, path
        c.cookies.clear()
        assert c.get("/api/state").status_code == 401
        c.cookies.set("procgraph_hmi", "forged")
        assert c.get("/api/state").status_code == 401
        c.cookies.clear()
        r = c.get("/", params={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
        assert c.get("/", params={"token": "wrong-token-0123456789"}).status_code == 401


def test_item13_a_token_of_three_spaces_is_refused() -> None:
    """Issue 9 item 13: ``token: "   "`` (and any token under 16 characters) is a
    validation error saying the minimum; an empty one still means no token."""
    with pytest.raises(ValidationError, match="at least 16 characters"):
        HmiAgent.Params(token="   ")
    with pytest.raises(ValidationError, match="at least 16 characters"):
        HmiAgent.Params(host="0.0.0.0", token="s3cret")
    with pytest.raises(ValidationError, match="spaces or control characters"):
        HmiAgent.Params(token=" " * 20)
    assert HmiAgent.Params(token="").token is None
    assert HmiAgent.Params(token="${HMI_TOKEN}").token == "${HMI_TOKEN}", "deploy's placeholder"
    with pytest.raises(ValueError, match="at least 16 characters"), AgentHarness(
            HmiAgent, {"port": 0, "token": "${HMI_TOKEN}"}):
        pass  # ... but never served with
    assert HmiAgent.Params(host="0.0.0.0", token=TOKEN).token == TOKEN


def test_item13_security_headers_on_401() -> None:
    """Issue 9 item 13: a refused request (401) carries the security headers too."""
    with serve(LiveState(), TOKEN) as c:
        for path in ("/", "/api/state", "/camera/x.jpg"):
            r = c.get(path)
            assert r.status_code == 401
            missing = [h for h in SECURITY if h not in r.headers]
            assert not missing, (path, missing)
            assert r.headers["cache-control"] == "no-store"
