"""Live state of the operator screen, shared by the agent's handlers and the web server.

:class:`LiveState` is written by the HMI agent (previews, verdicts, part outcomes, heartbeats)
and read by the Starlette app (JSON snapshots, annotated JPEGs). Every method takes one lock,
so both sides may call it from any thread. JPEG encoding happens lazily, outside the lock,
and is cached per camera version: a preview nobody looks at is never encoded.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from procgraph.agents.messages import PartOutcome, Preview, Verdict

OK_BGR = (80, 200, 60)
BAD_BGR = (60, 60, 235)
IDLE_BGR = (150, 150, 150)
JPEG_QUALITY = 80
THUMB_HEIGHT = 120
RECENT_PREVIEWS = 48
RECENT_VERDICTS = 64
SEEN_OUTCOMES = 4096
VIEW_HISTORY = 8
RECENT_PARTS = 60
HOLD_S = 0.5


# -- drawing --------------------------------------------------------------------------------
def _as_bgr(image: np.ndarray) -> np.ndarray:
    """A writable 3-channel uint8 copy of a gray, BGR or BGRA preview."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.array(img, copy=True)


def annotate(image: np.ndarray, verdict: Verdict | None, matched: bool = True) -> np.ndarray:
    """Draw a verdict on a preview: a green (OK) or red (defective) frame and a label banner.

    ``matched`` says whether the verdict belongs to this very image; when it does not (the
    verdict of an earlier frame is shown), the banner says so with a trailing ``*``.
    """
    img = _as_bgr(image)
    h, w = img.shape[:2]
    if verdict is None:
        colour = IDLE_BGR
        text = "waiting for verdict"
    else:
        colour = BAD_BGR if verdict.defective else OK_BGR
        text = f"{verdict.label.upper()} {verdict.score:.2f}" + ("" if matched else " *")
    thick = max(2, round(min(h, w) / 60))
    cv2.rectangle(img, (thick // 2, thick // 2), (w - 1 - thick // 2, h - 1 - thick // 2),
                  colour, thick)
    scale = max(0.35, min(h, w) / 480)
    weight = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    pad = max(3, round(6 * scale))
    x0, y0 = thick, thick
    cv2.rectangle(img, (x0, y0), (min(w - 1, x0 + tw + 2 * pad), y0 + th + base + 2 * pad),
                  colour, -1)
    ink = (255, 255, 255) if verdict is not None and verdict.defective else (20, 20, 20)
    cv2.putText(img, text, (x0 + pad, y0 + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                weight, cv2.LINE_AA)
    return img


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of a BGR or gray uint8 image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cv2 could not JPEG-encode an image of shape {image.shape}")
    return buf.tobytes()


def _placeholder(lines: list[str], width: int = 160, height: int = THUMB_HEIGHT) -> np.ndarray:
    """A dark tile with a red frame and centred text, for a view that has no image."""
    img = np.full((height, width, 3), 40, np.uint8)
    cv2.rectangle(img, (1, 1), (width - 2, height - 2), BAD_BGR, 2)
    step = 22
    y = height // 2 - (len(lines) - 1) * step // 2 + 5
    for line in lines:
        (tw, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.putText(img, line, (max(4, (width - tw) // 2), y), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (215, 215, 215), 1, cv2.LINE_AA)
        y += step
    return img


def _thumbnail(tiles: list[np.ndarray], height: int = THUMB_HEIGHT) -> np.ndarray:
    """Scale annotated images to one height and put them side by side."""
    scaled = []
    for tile in tiles:
        h, w = tile.shape[:2]
        new_w = max(1, round(w * height / h))
        scaled.append(cv2.resize(tile, (new_w, height), interpolation=cv2.INTER_AREA))
    return scaled[0] if len(scaled) == 1 else np.hstack(scaled)


# -- cameras --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shot:
    key: str
    seq: int
    image: np.ndarray
    n: int  # arrival order within its camera

    def is_of(self, key: str, seq: int | None) -> bool:
        """Same part: by key when both have one, else by sequence number."""
        if key and self.key:
            return key == self.key
        return seq is not None and seq == self.seq


@dataclass(frozen=True)
class _View:
    """What one version of a camera tile shows: a preview and the verdict drawn on it."""

    version: int
    shot: _Shot
    verdict: Verdict | None
    matched: bool


@dataclass
class _Camera:
    name: str
    view: _View | None = None
    shown_at: float = 0.0
    history: deque[_View] = field(default_factory=lambda: deque(maxlen=VIEW_HISTORY))
    newest_at: float = 0.0
    latest: Verdict | None = None
    verdict_at: float = 0.0
    recent_shots: deque[_Shot] = field(default_factory=lambda: deque(maxlen=RECENT_PREVIEWS))
    recent_verdicts: OrderedDict[str, Verdict] = field(default_factory=OrderedDict)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    arrived: int = 0
    version: int = 0
    jpegs: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    ok: int = 0
    defective: int = 0

    def show(self, shot: _Shot, verdict: Verdict | None, matched: bool, now: float) -> None:
        self.version += 1
        self.view = _View(self.version, shot, verdict, matched)
        self.history.append(self.view)
        self.shown_at = now

    def verdict_for(self, shot: _Shot) -> Verdict | None:
        found = self.recent_verdicts.get(shot.key) if shot.key else None
        if found is None:
            found = self.recent_verdicts.get(f"#{shot.seq}")
        return found if found is not None and shot.is_of(found.key, found.seq) else None

    def shot_for(self, key: str, seq: int | None) -> _Shot | None:
        for shot in reversed(self.recent_shots):
            if shot.is_of(key, seq):
                return shot
        return None

    def fps(self, now: float) -> float:
        recent = [t for t in self.arrivals if now - t <= 3.0]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


# -- health ---------------------------------------------------------------------------------
@dataclass
class _ReplicaSeen:
    started: float
    ts: float
    count_in: int
    count_out: int
    rate_in: float = 0.0
    rate_out: float = 0.0


@dataclass
class _AgentSeen:
    expected: int = 1
    restarts: int = 0
    reported_restarts: dict[int, int] = field(default_factory=dict)
    replicas: dict[int, _ReplicaSeen] = field(default_factory=dict)
    last_seen: float = 0.0


def _rounded(value: float, digits: int) -> float | None:
    """``value`` rounded, or None when it is NaN or infinite (JSON has no NaN)."""
    return round(value, digits) if math.isfinite(value) else None


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else default


class HealthTracker:
    """Turns successive heartbeat snapshots into one health row per agent.

    Rates come from count deltas between two heartbeats of the same replica; a change of
    a replica's ``started`` time counts as a restart seen by this screen; the number of
    replicas expected is the highest replica index ever seen plus one.
    """

    def __init__(self) -> None:
        self._agents: dict[str, _AgentSeen] = {}

    def update(
        self,
        beats: list[dict[str, Any]],
        streams: dict[str, dict[str, Any]] | None = None,
        now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Feed the heartbeats alive right now; return the table rows, sorted by agent.

        ``streams`` maps a reading agent to ``{"lag": int | None, "pending": int}`` summed
        over the streams it reads (from XINFO GROUPS).
        """
        now = time.time() if now is None else now
        streams = streams or {}
        alive: dict[str, dict[int, dict[str, Any]]] = {}
        for beat in beats:
            name, replica = beat.get("agent"), beat.get("replica")
            if not isinstance(name, str) or not isinstance(replica, int):
                continue
            alive.setdefault(name, {})[replica] = beat
            self._observe(name, replica, beat, now)
        rows = []
        for name in sorted(set(self._agents) | set(streams)):
            seen = self._agents.setdefault(name, _AgentSeen())
            rows.append(self._row(name, seen, alive.get(name, {}), streams.get(name, {}), now))
        return rows

    def _observe(self, name: str, replica: int, beat: dict[str, Any], now: float) -> None:
        seen = self._agents.setdefault(name, _AgentSeen())
        seen.expected = max(seen.expected, replica + 1, int(_num(beat.get("replicas"))))
        if isinstance(beat.get("restarts"), int):
            seen.reported_restarts[replica] = beat["restarts"]
        seen.last_seen = now
        ins = beat.get("inputs") or {}
        outs = beat.get("outputs") or {}
        count_in = int(sum(_num(p.get("count")) for p in ins.values() if isinstance(p, dict)))
        count_out = int(sum(_num(p.get("count")) for p in outs.values() if isinstance(p, dict)))
        started, ts = _num(beat.get("started")), _num(beat.get("ts"), now)
        prev = seen.replicas.get(replica)
        if prev is None:
            seen.replicas[replica] = _ReplicaSeen(started, ts, count_in, count_out)
            return
        if started != prev.started:
            seen.restarts += 1
            seen.replicas[replica] = _ReplicaSeen(started, ts, count_in, count_out)
            return
        dt = ts - prev.ts
        if dt <= 0:
            return
        prev.rate_in = max(0, count_in - prev.count_in) / dt
        prev.rate_out = max(0, count_out - prev.count_out) / dt
        prev.ts, prev.count_in, prev.count_out = ts, count_in, count_out

    def _row(self, name: str, seen: _AgentSeen, beats: dict[int, dict[str, Any]],
             stream: dict[str, Any], now: float) -> dict[str, Any]:
        latencies: list[float] = []
        errors = dead = 0
        blocked = 0.0
        for beat in beats.values():
            for port in (beat.get("inputs") or {}).values():
                if isinstance(port, dict):
                    if isinstance(port.get("latency_ms"), int | float):
                        latencies.append(float(port["latency_ms"]))
                    errors += int(_num(port.get("errors")))
                    dead += int(_num(port.get("dead")))
            for port in (beat.get("outputs") or {}).values():
                if isinstance(port, dict):
                    blocked += _num(port.get("blocked_s"))
        live = [seen.replicas[i] for i in beats if i in seen.replicas]
        alive = len(beats)
        status = "down" if alive == 0 else "degraded" if alive < seen.expected else "ok"
        if status == "ok" and dead:
            status = "warn"
        return {
            "agent": name,
            "status": status,
            "alive": alive,
            "expected": seen.expected,
            "restarts": max(seen.restarts, sum(seen.reported_restarts.values())),
            "rate_in": round(sum(r.rate_in for r in live), 1),
            "rate_out": round(sum(r.rate_out for r in live), 1),
            "latency_p50_ms": round(max(latencies), 1) if latencies else None,
            "lag": stream.get("lag"),
            "pending": stream.get("pending"),
            "errors": errors,
            "dead": dead,
            "blocked_s": round(blocked, 1),
            "uptime_s": round(now - min(r.started for r in live), 0) if live else None,
            "last_seen_s": round(now - seen.last_seen, 1) if seen.last_seen else None,
        }


# -- the shared state -----------------------------------------------------------------------
@dataclass
class _Defect:
    uid: int
    key: str
    part_seq: int | None
    outcome: str
    at: float
    cameras: dict[str, dict[str, Any]]
    thumb: bytes


class LiveState:
    """Everything the operator page shows, updated by the agent and read by the server.

    ``version`` increases on every change, so a client can tell whether to redraw.
    """

    def __init__(self, title: str = "Inspection line", graph: str = "",
                 defects_kept: int = 12) -> None:
        if defects_kept < 1:
            raise ValueError(f"defects_kept must be >= 1, got {defects_kept}")
        self.title = title
        self.graph = graph
        self._lock = threading.Lock()
        self._version = 0
        self._cameras: dict[str, _Camera] = {}
        self._defects: deque[_Defect] = deque(maxlen=defects_kept)
        self._defect_uid = 0
        self._counts = {"parts": 0, "ok": 0, "defective": 0, "incomplete": 0, "rejected": 0}
        self._by_outcome: dict[str, int] = {}
        self._seen_outcomes: OrderedDict[str, None] = OrderedDict()
        self._outcomes_seen = False
        self._last_outcome: dict[str, Any] | None = None
        self._part_times: deque[float] = deque(maxlen=256)
        self._recent_parts: deque[dict[str, Any]] = deque(maxlen=RECENT_PARTS)
        self._health: list[dict[str, Any]] = []
        self._health_at = 0.0
        self._tracker = HealthTracker()
        self.started = time.time()
        self.closed = threading.Event()

    # -- writers (agent side) -------------------------------------------------------------
    @property
    def version(self) -> int:
        """Change counter: any update increments it."""
        return self._version

    def close(self) -> None:
        """Tell long-lived readers (the event stream) to finish."""
        self.closed.set()

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            cam = self._cameras[name] = _Camera(name)
        return cam

    def add_preview(self, preview: Preview) -> None:
        """A new preview image.

        It is shown at once if its verdict is already known, or if no verdicts are
        flowing for this camera; otherwise it waits (at most ``HOLD_S``) for its verdict,
        so that the picture and the verdict drawn on it belong together.
        """
        now = time.time()
        with self._lock:
            cam = self._camera(preview.camera)
            cam.arrived += 1
            shot = _Shot(preview.key, preview.seq, preview.image, cam.arrived)
            cam.recent_shots.append(shot)
            cam.arrivals.append(now)
            cam.newest_at = now
            found = cam.verdict_for(shot)
            if found is not None:
                cam.show(shot, found, True, now)
            elif (cam.view is None or cam.latest is None or now - cam.verdict_at > HOLD_S
                  or now - cam.shown_at > HOLD_S):
                cam.show(shot, cam.latest, False, now)
            self._version += 1

    def add_verdict(self, verdict: Verdict) -> None:
        """A classifier verdict: show the newer preview it belongs to, drawn with it."""
        now = time.time()
        with self._lock:
            cam = self._camera(verdict.camera)
            cam.verdict_at = now
            if cam.latest is None or verdict.capture_ns >= cam.latest.capture_ns:
                cam.latest = verdict  # a late verdict of an old frame is not the latest
            for tag in (verdict.key, f"#{verdict.seq}"):
                if tag:
                    cam.recent_verdicts[tag] = verdict
                    cam.recent_verdicts.move_to_end(tag)
            while len(cam.recent_verdicts) > 2 * RECENT_VERDICTS:
                cam.recent_verdicts.popitem(last=False)
            if verdict.defective:
                cam.defective += 1
            else:
                cam.ok += 1
            view = cam.view
            shot = cam.shot_for(verdict.key, verdict.seq)
            if shot is not None and (view is None or shot.n > view.shot.n
                                     or (shot.n == view.shot.n and not view.matched)):
                cam.show(shot, verdict, True, now)
            elif view is not None and not view.matched and shot is None:
                cam.show(view.shot, verdict, False, now)  # still the freshest verdict there is
            self._version += 1
            if verdict.defective and not self._outcomes_seen:
                self._add_defect(verdict.key, None, f"defective_{verdict.camera}",
                                 {verdict.camera: verdict})

    def add_outcome(self, outcome: PartOutcome) -> None:
        """A part's joined outcome: count it (once per key) and keep rejects as defects."""
        with self._lock:
            self._outcomes_seen = True
            if outcome.key:
                if outcome.key in self._seen_outcomes:
                    return  # redelivered after a restart: already counted
                self._seen_outcomes[outcome.key] = None
                if len(self._seen_outcomes) > SEEN_OUTCOMES:
                    self._seen_outcomes.popitem(last=False)
            kind = outcome.outcome
            self._counts["parts"] += 1
            if kind == "ok":
                self._counts["ok"] += 1
            elif kind.startswith("defective"):
                self._counts["defective"] += 1
            else:
                self._counts["incomplete"] += 1
            if outcome.reject:
                self._counts["rejected"] += 1
            self._by_outcome[kind] = self._by_outcome.get(kind, 0) + 1
            self._part_times.append(time.time())
            self._recent_parts.append({"part_seq": outcome.part_seq, "outcome": kind})
            self._last_outcome = {
                "key": outcome.key, "part_seq": outcome.part_seq, "outcome": kind,
                "reject": outcome.reject, "missing": list(outcome.missing),
            }
            if outcome.reject or kind != "ok":
                self._add_defect(outcome.key, outcome.part_seq, kind, outcome.verdicts,
                                 outcome.missing)
            self._version += 1

    def _add_defect(self, key: str, part_seq: int | None, kind: str,
                    verdicts: dict[str, Verdict], missing: list[str] | None = None) -> None:
        """Keep a thumbnail of a rejected part (call with the lock held)."""
        tiles: list[np.ndarray] = []
        for name in sorted(verdicts):
            v = verdicts[name]
            cam = self._cameras.get(name)
            shot = cam.shot_for(key or v.key, v.seq) if cam else None
            if shot is not None and (v.defective or len(verdicts) == 1):
                tiles.append(annotate(shot.image, v))
        if not tiles:
            for name, cam in sorted(self._cameras.items()):
                shot = cam.shot_for(key, None)
                if shot is not None:
                    tiles.append(annotate(shot.image, verdicts.get(name)))
        for name in missing or []:
            tiles.append(_placeholder([name.upper()[:14], "missing"]))
        thumb = _thumbnail(tiles) if tiles else _placeholder([kind.replace("_", " ")[:18],
                                                              "no preview"])
        self._defect_uid += 1
        self._defects.appendleft(_Defect(
            uid=self._defect_uid, key=key, part_seq=part_seq, outcome=kind, at=time.time(),
            cameras={n: {"label": v.label, "score": _rounded(v.score, 3),
                         "defective": v.defective} for n, v in verdicts.items()},
            thumb=encode_jpeg(thumb),
        ))

    def set_health(self, beats: list[dict[str, Any]],
                   streams: dict[str, dict[str, Any]] | None = None,
                   now: float | None = None) -> None:
        """Feed the current heartbeats (and per-agent stream lag) to the health table."""
        with self._lock:
            self._health = self._tracker.update(beats, streams, now)
            self._health_at = time.time() if now is None else now
            self._version += 1

    # -- readers (server side) ------------------------------------------------------------
    def camera_names(self) -> list[str]:
        """Cameras seen so far, sorted."""
        with self._lock:
            return sorted(self._cameras)

    def camera_jpeg(self, name: str, version: int | None = None) -> tuple[bytes, int] | None:
        """The annotated JPEG of a camera and its version, or None if there is no image.

        With ``version``, that version while it is among the last few (so a page shows the
        picture that matches the snapshot it was told about), else the latest.
        """
        with self._lock:
            cam = self._cameras.get(name)
            if cam is None or cam.view is None:
                return None
            view = next((v for v in cam.history if v.version == version), cam.view)
            cached = cam.jpegs.get(view.version)
            if cached is not None:
                return cached, view.version
        jpeg = encode_jpeg(annotate(view.shot.image, view.verdict, view.matched))
        with self._lock:
            cam.jpegs[view.version] = jpeg
            while len(cam.jpegs) > VIEW_HISTORY:
                cam.jpegs.popitem(last=False)
        return jpeg, view.version

    def defect_jpeg(self, index: int, uid: int | None = None) -> bytes | None:
        """Thumbnail of the ``index``-th most recent defect (0 is the newest).

        With ``uid``, the defect of that id if it is still kept (indices shift as new
        defects arrive; ids do not).
        """
        with self._lock:
            for d in self._defects if uid is not None else ():
                if d.uid == uid:
                    return d.thumb
            if 0 <= index < len(self._defects):
                return self._defects[index].thumb
            return None

    def counters(self) -> dict[str, Any]:
        """Part counters and yield (percentage of OK parts, None before the first part)."""
        with self._lock:
            return self._counters_locked(time.time())

    def _counters_locked(self, now: float) -> dict[str, Any]:
        c = dict(self._counts)
        parts = c["parts"]
        c["yield_pct"] = round(100.0 * c["ok"] / parts, 1) if parts else None
        recent = [t for t in self._part_times if now - t <= 60.0]
        span = min(60.0, now - self.started)
        c["parts_per_min"] = round(len(recent) * 60.0 / span, 1) if span >= 1.0 else 0.0
        c["by_outcome"] = dict(self._by_outcome)
        return c

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-able data (images by URL and version)."""
        now = time.time()
        with self._lock:
            cameras = []
            for name in sorted(self._cameras):
                cam = self._cameras[name]
                view = cam.view
                v = view.verdict if view else None
                cameras.append({
                    "name": name,
                    "version": cam.version,
                    "has_image": view is not None,
                    "seq": view.shot.seq if view else None,
                    "key": view.shot.key if view else None,
                    "fps": round(cam.fps(now), 1),
                    "age_s": round(now - cam.newest_at, 1) if view else None,
                    "verdict": None if v is None or view is None else {
                        "label": v.label, "score": _rounded(v.score, 3),
                        "defective": v.defective, "seq": v.seq, "matched": view.matched,
                        "model": f"{v.model.name} {v.model.version}",
                        "inference_ms": _rounded(v.inference_ms, 2),
                    },
                    "ok": cam.ok,
                    "defective": cam.defective,
                })
            defects = [{
                "index": i, "uid": d.uid, "key": d.key, "part_seq": d.part_seq,
                "outcome": d.outcome, "at": d.at, "cameras": d.cameras,
            } for i, d in enumerate(self._defects)]
            return {
                "title": self.title,
                "graph": self.graph,
                "version": self._version,
                "now": now,
                "counters": self._counters_locked(now),
                "last_outcome": self._last_outcome,
                "recent_parts": list(self._recent_parts),
                "cameras": cameras,
                "defects": defects,
                "health": [dict(row) for row in self._health],
                "health_age_s": round(now - self._health_at, 1) if self._health_at else None,
            }

