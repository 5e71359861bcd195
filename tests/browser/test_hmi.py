"""The HMI page in a real browser, on a real line.

The test runs a real graph (tests/browser/hmi_graph.yaml) under the supervisor: two
synthetic cameras, the join, the PLC writer with a simulated PLC, and the HmiAgent reading
``plc.written``; then it opens the page in headless Chromium. Set PROCGRAPH_SCREENSHOT=1 to
refresh docs/hmi-screenshot.png. The HMI's state, drawing, health table, web app and agent
have unit tests of their own in tests/agents/hmi/.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from pgtest_util import wait_for as wait_until
from procgraph.brokers import free_port
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

if TYPE_CHECKING:
    from playwright.sync_api import Page

HERE = Path(__file__).parent
REPO = HERE.parent.parent


# -- the page in a browser, on a real graph -------------------------------------------------
AGENTS = ("back_cam", "front_cam", "hmi", "join", "plc", "plc_sim")


@pytest.fixture
def line(running: tuple[str, Supervisor]) -> str:
    """The HMI URL (with its token) of the synthetic line."""
    return running[0]


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Supervisor]]:
    """The synthetic line under the supervisor; yields the HMI URL and the supervisor."""
    port = free_port()
    monkeypatch.setenv("PROCGRAPH_HMI_PORT", str(port))
    monkeypatch.setenv("PROCGRAPH_HMI_TOKEN", "line3-token-0123456789")
    monkeypatch.setenv("PROCGRAPH_PLC_PORT", str(free_port()))
    plan = load_graph(HERE / "hmi_graph.yaml")
    log = (tmp_path / "supervisor.log").open("w")
    sup = Supervisor(plan, out=log, colour=False)
    runner = threading.Thread(target=sup.run, name="supervisor", daemon=True)
    runner.start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 20, "the HMI to answer /healthz")
        yield f"{base}/?token=line3-token-0123456789", sup
    finally:
        sup.stopping.set()
        runner.join(timeout=20)
        log.close()
    assert not runner.is_alive(), "the supervisor stopped"


def _parts(page: Page) -> int:
    return int(page.inner_text("#k-parts").replace(",", "").replace("\u202f", "") or 0)


@pytest.mark.browser
def test_page_shows_the_live_line(line: str, browser_page: Page, tmp_path: Path) -> None:
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(line)
    page.wait_for_function(
        """() => {
            const imgs = [...document.querySelectorAll('.cam img')];
            return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""", timeout=15_000)
    names = page.eval_on_selector_all(".cam img", "els => els.map(e => e.dataset.camera)")
    assert sorted(names) == ["back", "front"]
    page.wait_for_function("() => Number(document.querySelector('#k-parts')"
                           ".textContent.replace(/\\D/g, '')) > 0", timeout=10_000)
    first = _parts(page)
    page.wait_for_function(f"() => Number(document.querySelector('#k-parts')"
                           f".textContent.replace(/\\D/g, '')) > {first + 5}", timeout=10_000)
    assert _parts(page) > first
    assert page.inner_text("#k-yield") not in ("", "\u2013")
    page.wait_for_function(
        f"""() => {{
            const rows = [...document.querySelectorAll('#health tr[data-agent]')];
            const names = rows.map(r => r.dataset.agent).sort().join(',');
            return names === '{",".join(AGENTS)}'
                && rows.every(r => r.querySelector('.state').textContent === 'OK');
        }}""", timeout=15_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#defects img')]"
        ".some(i => i.complete && i.naturalWidth > 0)", timeout=10_000)
    assert page.inner_text("#link") == "LIVE"
    # let a few more updates land, so the picture is a busy line rather than a cold start
    page.wait_for_function(f"() => Number(document.querySelector('#k-parts')"
                           f".textContent.replace(/\\D/g, '')) > {first + 40}", timeout=10_000)
    page.screenshot(path=str(tmp_path / "hmi.png"))
    if os.environ.get("PROCGRAPH_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO / "docs" / "hmi-screenshot.png"))
    assert errors == [], f"JavaScript errors on the page: {errors}"
