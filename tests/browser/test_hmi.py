"""The HMI: live state, the web app and its token, the agent, and the page in a real browser.

The browser test runs a real graph (tests/browser/hmi_graph.yaml) under the supervisor: two
synthetic cameras, a joiner standing in for the PLC writer and the HmiAgent, then opens the
page in headless Chromium. Set PROCGRAPH_SCREENSHOT=1 to refresh docs/hmi-screenshot.png.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from procgraph.agents.hmi import HmiAgent
from procgraph.agents.hmi.agent import is_loopback
from procgraph.agents.hmi.app import create_app
from procgraph.agents.hmi.state import HealthTracker, LiveState, annotate, encode_jpeg
from procgraph.agents.messages import ModelInfo, PartOutcome, Preview, Verdict
from pydantic import ValidationError

from pgtest_util import wait_for as wait_until
from procgraph.brokers import free_port
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor
from procgraph.testing import AgentHarness

if TYPE_CHECKING:
    from playwright.sync_api import Page

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MODEL = ModelInfo(name="m", version="3", sha256="ab" * 32)


def preview(camera: str = "front", seq: int = 1, key: str = "", gray: bool = False) -> Preview:
    shape = (60, 80) if gray else (60, 80, 3)
    image = np.full(shape, 120, np.uint8)
    return Preview(camera=camera, seq=seq, capture_ns=time.time_ns(), image=image,
                   key=key or f"p{seq}")


def verdict(camera: str = "front", seq: int = 1, defective: bool = False, key: str = "") -> Verdict:
    label = "scratch" if defective else "ok"
    return Verdict(camera=camera, seq=seq, capture_ns=seq * 1_000_000, label=label, score=0.9,
                   defective=defective, scores={label: 0.9}, inference_ms=0.5, model=MODEL,
                   key=key or f"p{seq}")


def outcome(seq: int, kind: str = "ok", cameras: tuple[str, ...] = ("front", "back"),
            key: str = "") -> PartOutcome:
    bad = {"defective_front": {"front"}, "defective_back": {"back"},
           "defective_both": {"front", "back"}}.get(kind, set())
    sides = {c: verdict(c, seq, c in bad) for c in cameras}
    missing = [] if kind != "incomplete" else ["back"]
    if missing:
        sides.pop("back", None)
    return PartOutcome(key=key or f"p{seq}", part_seq=seq, outcome=kind, reject=kind != "ok",
                       capture_ns=time.time_ns(), verdicts=sides, missing=missing)


def decodes(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable JPEG"
    return img


# -- state ----------------------------------------------------------------------------------
def test_counters_and_yield() -> None:
    state = LiveState(defects_kept=3)
    assert state.counters()["yield_pct"] is None
    kinds = ["ok", "ok", "ok", "defective_front", "defective_both", "incomplete", "ok", "ok"]
    for i, kind in enumerate(kinds):
        state.add_outcome(outcome(i, kind))
    c = state.counters()
    assert (c["parts"], c["ok"], c["defective"], c["incomplete"], c["rejected"]) == (8, 5, 2, 1, 3)
    assert c["yield_pct"] == 62.5
    assert c["by_outcome"] == {"ok": 5, "defective_front": 1, "defective_both": 1,
                               "incomplete": 1}


def test_redelivered_outcome_is_counted_once() -> None:
    state = LiveState()
    state.add_outcome(outcome(1, "ok"))
    state.add_outcome(outcome(1, "ok"))
    assert state.counters()["parts"] == 1


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("defective", [None, False, True])
def test_annotate_gives_a_decodable_jpeg(gray: bool, defective: bool | None) -> None:
    p = preview(gray=gray)
    v = None if defective is None else verdict(defective=defective)
    img = decodes(encode_jpeg(annotate(p.image, v)))
    assert img.shape == (60, 80, 3)
    corner = img[1, 40].astype(int)  # on the frame, outside the label banner
    if defective:
        assert corner[2] > 150 and corner[1] < 120, "defective frame is red"
    elif defective is False:
        assert corner[1] > 150 and corner[2] < 120, "ok frame is green"
    assert p.image[1, 40].tolist() == ([120] * 3 if not gray else 120), "input untouched"


def test_preview_waits_for_its_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    state = LiveState()
    assert state.camera_jpeg("front") is None
    state.add_preview(preview(seq=1))  # no verdicts flowing yet: shown at once
    first = state.camera_jpeg("front")
    assert first is not None
    assert state.snapshot()["cameras"][0]["verdict"] is None
    state.add_verdict(verdict(seq=1, defective=True))
    cam = state.snapshot()["cameras"][0]
    assert cam["verdict"]["matched"] and cam["verdict"]["defective"]
    again = state.camera_jpeg("front")
    assert again is not None and again[1] > first[1] and again[0] != first[0]
    state.add_preview(preview(seq=2))  # held until its verdict arrives
    assert state.snapshot()["cameras"][0]["seq"] == 1
    state.add_verdict(verdict(seq=2))
    cam = state.snapshot()["cameras"][0]
    assert cam["seq"] == 2 and cam["verdict"]["seq"] == 2 and cam["verdict"]["matched"]
    state.add_verdict(verdict(seq=1, defective=True))  # a late verdict of an older frame
    assert state.snapshot()["cameras"][0]["verdict"]["seq"] == 2
    monkeypatch.setattr("procgraph.agents.hmi.state.HOLD_S", 0.0)
    state.add_preview(preview(seq=3))  # its verdict is late: shown with the latest, marked
    cam = state.snapshot()["cameras"][0]
    assert cam["seq"] == 3 and cam["verdict"]["seq"] == 2 and not cam["verdict"]["matched"]
    old = state.camera_jpeg("front", version=first[1])
    assert old == first, "a recent version is served as asked"
    latest = state.camera_jpeg("front", version=10_000)
    assert latest is not None and latest[1] == cam["version"]
    decodes(latest[0])


def test_defect_thumbnails_newest_first_and_bounded() -> None:
    state = LiveState(defects_kept=2)
    for seq in range(3):
        state.add_preview(preview("front", seq))
        state.add_preview(preview("back", seq))
    for seq in range(3):
        state.add_outcome(outcome(seq, "defective_front"))
    defects = state.snapshot()["defects"]
    assert [d["part_seq"] for d in defects] == [2, 1]
    newest = state.defect_jpeg(0)
    assert newest is not None
    assert decodes(newest).shape[0] == 120
    assert state.defect_jpeg(0, uid=defects[1]["uid"]) == state.defect_jpeg(1)
    assert state.defect_jpeg(2) is None
    state.add_outcome(outcome(9, "incomplete"))  # no preview of p9: a placeholder
    placeholder = state.defect_jpeg(0)
    assert placeholder is not None
    decodes(placeholder)


def test_health_rates_restarts_and_replicas() -> None:
    def beat(replica: int, ts: float, count: int, started: float = 100.0) -> dict[str, Any]:
        return {"agent": "clf", "replica": replica, "started": started, "ts": ts,
                "inputs": {"frames": {"count": count, "errors": 0, "dead": 0,
                                      "latency_ms": 4.0 + replica}},
                "outputs": {"verdicts": {"count": count, "blocked_s": 0.0}}}

    tracker = HealthTracker()
    tracker.update([beat(0, 200.0, 0), beat(1, 200.0, 0)], now=200.0)
    rows = tracker.update([beat(0, 201.0, 10), beat(1, 201.0, 30)],
                          {"clf": {"lag": 7, "pending": 2}}, now=201.0)
    (row,) = rows
    assert (row["alive"], row["expected"], row["status"]) == (2, 2, "ok")
    assert row["rate_in"] == 40.0 and row["rate_out"] == 40.0
    assert row["latency_p50_ms"] == 5.0 and row["lag"] == 7
    (row,) = tracker.update([beat(0, 202.0, 20)], now=202.0)  # replica 1 gone
    assert (row["alive"], row["expected"], row["status"]) == (1, 2, "degraded")
    (row,) = tracker.update([beat(0, 203.0, 25), beat(1, 203.0, 1, started=202.5)], now=203.0)
    assert row["restarts"] == 1 and row["alive"] == 2
    (row,) = tracker.update([], now=210.0)
    assert row["status"] == "down" and row["alive"] == 0


# -- params, token, app ---------------------------------------------------------------------
def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("hmi.plant.local")


def test_refuses_non_loopback_bind_without_token() -> None:
    with pytest.raises(ValidationError, match="not loopback and no token"):
        HmiAgent.Params(host="0.0.0.0")
    with pytest.raises(ValidationError, match="not loopback and no token"):
        HmiAgent.Params(host="0.0.0.0", token="")  # an unset ${HMI_TOKEN} is no token
    assert HmiAgent.Params(host="0.0.0.0", token="s3cret").token == "s3cret"
    assert HmiAgent.Params().host == "127.0.0.1"


@contextlib.contextmanager
def serve(state: LiveState, token: str | None) -> Iterator[httpx.Client]:
    """The app on a real uvicorn server (loopback, free port); yields a client for it."""
    server = uvicorn.Server(uvicorn.Config(create_app(state, token), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
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
    page = c.get("/", params={"token": "s3cret/+"})
    assert page.status_code == 200
    assert "static/app.js?token=s3cret%2F%2B" in page.text, "the page passes the token on"
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


def test_agent_serves_what_it_is_fed() -> None:
    with AgentHarness(HmiAgent, {"port": 0, "title": "Harnessed"}) as h:
        agent = h.agent
        assert isinstance(agent, HmiAgent) and agent.port > 0
        h.feed("previews", [preview("front", 1), preview("back", 1)])
        h.feed("verdicts", [verdict("front", 1), verdict("back", 1, defective=True)])
        h.feed("outcomes", outcome(1, "defective_back"))
        base = f"http://127.0.0.1:{agent.port}"
        snap = httpx.get(f"{base}/api/state", timeout=5).json()
        assert snap["title"] == "Harnessed"
        assert [c["name"] for c in snap["cameras"]] == ["back", "front"]
        assert snap["counters"]["defective"] == 1
        decodes(httpx.get(f"{base}/camera/back.jpg", timeout=5).content)
    assert not agent._server_thread.is_alive(), "teardown stops the server"


# -- the page in a browser, on a real graph -------------------------------------------------
AGENTS = ("back_cam", "front_cam", "hmi", "plc")


@pytest.fixture
def line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The synthetic line under the supervisor; yields the HMI URL (with its token)."""
    port = free_port()
    monkeypatch.setenv("PROCGRAPH_HMI_PORT", str(port))
    monkeypatch.setenv("PROCGRAPH_HMI_TOKEN", "line3-token")
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
        yield f"{base}/?token=line3-token"
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
