"""Issue 9 items 12 and 13 in a real browser: odd camera names, and the token's cookie."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pytest
import uvicorn
from procgraph.agents.hmi.app import COOKIE, create_app
from procgraph.agents.hmi.server import server_config
from procgraph.agents.hmi.state import LiveState
from procgraph.agents.messages import Preview

from pgtest_util import wait_for as wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

TOKEN = "browser-token-0123456789abcdef"
NAMES = ("cam\ud800", "a/b", "front")


@pytest.fixture
def hmi() -> Iterator[str]:
    """An HMI web server (the agent's settings) with three cameras; yields its base URL."""
    state = LiveState(title="Hostile names")
    for i, name in enumerate(NAMES):
        image = np.full((60, 80, 3), 60 + 40 * i, np.uint8)
        state.add_preview(Preview(camera=name, seq=1, capture_ns=1, image=image, key="p1"))
    server = uvicorn.Server(server_config(create_app(state, TOKEN), "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "uvicorn to start")
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        state.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.browser
def test_item12_item13_browser_odd_names_and_the_token_cookie(hmi: str,
                                                             browser_page: Page) -> None:
    """Issue 9 items 12 and 13: opened with ?token=, the page ends on the address without
    it, holds an HttpOnly SameSite=Strict cookie instead, and shows the pictures of cameras
    named "cam\\ud800" and "a/b" with no token in any request."""
    page = browser_page
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(f"{hmi}/?token={TOKEN}")
    assert page.url == f"{hmi}/", "the token left the address bar"
    page.wait_for_function(
        """() => {
            const imgs = [...document.querySelectorAll('.cam img')];
            return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", timeout=15_000)
    names = page.eval_on_selector_all(".cam img", "els => els.map(e => e.dataset.camera)")
    assert sorted(names) == sorted(NAMES)
    cookies = [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert len(cookies) == 1
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert TOKEN not in cookies[0]["value"]
    assert page.evaluate("document.cookie") == "", "scripts cannot read the cookie"
    assert [u for u in requests if TOKEN in u] == [f"{hmi}/?token={TOKEN}"]
    assert errors == [], f"JavaScript errors on the page: {errors}"
