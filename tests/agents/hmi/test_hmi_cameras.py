"""Issue 9 item 12: camera names from the line are outside data, and memory is bounded."""

from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np
from hmi_messages import decodes, preview
from procgraph.agents.hmi.state import MAX_CAMERAS, PREVIEW_BYTES, LiveState
from procgraph.agents.messages import Preview
from test_hmi_app import serve

MIB = 1 << 20


def test_item12_camera_names_with_a_lone_surrogate_or_a_slash_are_served() -> None:
    """Issue 9 item 12: cameras named "cam\\ud800" and "a/b": /api/state answers, and both
    pictures can be fetched at the address the snapshot gives."""
    state = LiveState()
    for name in ("cam\ud800", "a/b", "front"):
        state.add_preview(preview(name, 1))
    with serve(state, None) as c:
        r = c.get("/api/state")
        assert r.status_code == 200
        cams = {cam["name"]: cam for cam in r.json()["cameras"]}
        assert set(cams) == {"cam\ud800", "a/b", "front"}
        for name, cam in cams.items():
            img = c.get(cam["image"])
            assert img.status_code == 200, (name, cam["image"])
            decodes(img.content)
        assert cams["front"]["image"] == "camera/front.jpg"
        assert c.get("/camera/front.jpg").status_code == 200, "plain names keep their address"
        assert c.get("/camera/a%2Fb.jpg").status_code == 200
        with c.stream("GET", "/events") as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    assert "a/b" in line
                    break
            state.close()


def test_item12_many_cameras_with_large_previews_are_bounded() -> None:
    """Issue 9 item 12: 96 camera names, each with a large (12 MiB) preview: the HMI keeps
    at most MAX_CAMERAS cameras and about PREVIEW_BYTES of pictures, newest kept."""
    tracemalloc.start()
    try:
        state = LiveState()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(96):
            image = np.full((2048, 2048, 3), i, np.uint8)  # 12 MiB each, 1.2 GiB in all
            state.add_preview(Preview(camera=f"cam{i:02d}", seq=1, capture_ns=time.time_ns(),
                                      image=image, key=f"p{i}"))
            del image
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    names = state.camera_names()
    assert len(names) <= MAX_CAMERAS
    assert "cam95" in names, "the newest camera is kept"
    assert held <= PREVIEW_BYTES + 16 * MIB, f"{held / MIB:.0f} MiB held"
    assert state.held_bytes() <= PREVIEW_BYTES
    assert state.camera_jpeg("cam95") is not None, "the newest picture can be shown"
