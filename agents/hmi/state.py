"""Live state of the operator screen, shared by the agent's handlers and the web server.

:class:`LiveState` is written by the HMI agent (previews, verdicts, part outcomes, health)
and read by the Starlette app (JSON snapshots, annotated JPEGs). Every method takes one lock,
so both sides may call it from any thread. JPEG encoding happens lazily, outside the lock,
and is cached per camera version: a preview nobody looks at is never encoded.

Drawing lives in :mod:`procgraph.agents.hmi.draw`, the health table in
:mod:`procgraph.agents.hmi.health`; this module keeps cameras, verdicts, outcomes, defects
and snapshots.

What it holds is bounded: at most ``max_cameras`` cameras (the one heard from longest ago is
forgotten first) and about ``preview_bytes`` of pictures (previews and their JPEGs; older
previews go first, then the current pictures of the cameras updated longest ago). A preview
over ``MAX_PREVIEW_BYTES`` is scaled down when it arrives. Camera names come from the line:
the snapshot gives each camera's picture address (``image``) percent-encoded, so any name,
even one with ``/`` or a lone surrogate, can be fetched.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import numpy as np
from procgraph.agents.hmi.draw import annotate, fit_bytes, jpeg, placeholder, thumbnail
from procgraph.agents.hmi.events import EventLog, health_events
from procgraph.agents.hmi.health import Beats, HealthTracker
from procgraph.agents.messages import PartOutcome, Preview, Verdict

from procgraph.health import GroupLag

RECENT_PREVIEWS = 48
RECENT_VERDICTS = 64
SEEN_OUTCOMES = 4096
VIEW_HISTORY = 8
RECENT_PARTS = 60
HOLD_S = 0.5
#: the most cameras kept (previews or verdicts of more names forget the oldest)
MAX_CAMERAS = 64
#: about the most bytes of pictures kept, previews and their JPEGs together
PREVIEW_BYTES = 64 << 20
#: a preview larger than this (bytes) is scaled down when it arrives
MAX_PREVIEW_BYTES = 4 << 20
#: the most camera tiles on one reject thumbnail
MAX_THUMB_TILES = 8
#: end-to-end latencies kept (capture -> PLC written), for p50/p99
LATENCIES = 512
#: the PLC writer with a backlog and no write for this long: the PLC link is stalled
PLC_STALL_S = 5.0
#: a restart stays on the banner this long
RESTART_BANNER_S = 120.0
#: incomplete rejects counted on the banner over this window
INCOMPLETE_BANNER_S = 60.0
#: an agent further behind than this many entries is shown on the banner
LAG_BANNER = 100


def model_name(model: Any) -> str:
    """``name version`` of a verdict's model."""
    return f"{model.name} {model.version}"


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def camera_ref(name: str) -> str:
    """A camera name as one URL path segment: UTF-8 (lone surrogates kept), percent-encoded."""
    return quote(name.encode("utf-8", "surrogatepass"), safe="")


def camera_name(ref: str) -> str:
    """The camera name of a :func:`camera_ref` segment (the inverse)."""
    return unquote_to_bytes(ref).decode("utf-8", "surrogatepass")


# -- cameras --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shot:
    key: str
    seq: int
    image: np.ndarray
    n: int  # arrival order within its camera
    uid: int = 0  # arrival order among all cameras

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
    model: str = ""

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

    def forget(self, uid: int) -> None:
        """Drop a preview: from the recent ones, the tile's history and the JPEG cache."""
        for shot in [s for s in self.recent_shots if s.uid == uid]:
            self.recent_shots.remove(shot)
        for view in [v for v in self.history if v.shot.uid == uid]:
            self.history.remove(view)
            self.jpegs.pop(view.version, None)
        if self.view is not None and self.view.shot.uid == uid:
            self.jpegs.pop(self.view.version, None)
            self.view = None

    def shots(self) -> dict[int, _Shot]:
        """Every preview this camera holds, by uid."""
        held = {s.uid: s for s in self.recent_shots}
        held.update((v.shot.uid, v.shot) for v in self.history)
        if self.view is not None:
            held[self.view.shot.uid] = self.view.shot
        return held

    def last_heard(self) -> float:
        """When a preview or a verdict of this camera last arrived."""
        return max(self.newest_at, self.verdict_at)

    def fps(self, now: float) -> float:
        recent = [t for t in self.arrivals if now - t <= 3.0]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


def _rounded(value: float | None, digits: int) -> float | None:
    """``value`` rounded, or None when it is None, NaN or infinite (JSON has no NaN)."""
    return round(value, digits) if value is not None and math.isfinite(value) else None


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
    missing: list[str] = field(default_factory=list)


class LiveState:
    """Everything the operator page shows, updated by the agent and read by the server.

    ``version`` increases on every change, so a client can tell whether to redraw.
    """

    def __init__(self, title: str = "Inspection line", graph: str = "",
                 defects_kept: int = 12, max_cameras: int = MAX_CAMERAS,
                 preview_bytes: int = PREVIEW_BYTES, yield_target_pct: float = 95.0,
                 plc_agent: str = "plc") -> None:
        if defects_kept < 1:
            raise ValueError(f"defects_kept must be >= 1, got {defects_kept}")
        if max_cameras < 1 or preview_bytes < 1:
            raise ValueError(f"max_cameras and preview_bytes must be >= 1, got {max_cameras} "
                             f"and {preview_bytes}")
        self.max_cameras = max_cameras
        self.yield_target_pct = yield_target_pct
        self.plc_agent = plc_agent
        self.events = EventLog()
        self._latencies: deque[float] = deque(maxlen=LATENCIES)
        self._last_write: dict[str, Any] | None = None
        self._plc_state = "unknown"
        self.preview_bytes = preview_bytes
        self._shot_uid = 0
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
            while len(self._cameras) >= self.max_cameras:
                oldest = min(self._cameras.values(), key=_Camera.last_heard)
                del self._cameras[oldest.name]
            cam = self._cameras[name] = _Camera(name)
        return cam

    def _held_locked(self) -> int:
        return sum(s.image.nbytes for cam in self._cameras.values() for s in cam.shots().values()
                   ) + sum(len(j) for cam in self._cameras.values() for j in cam.jpegs.values())

    def held_bytes(self) -> int:
        """Bytes of pictures held: previews (as arrays) and their cached JPEGs."""
        with self._lock:
            return self._held_locked()

    def _trim_locked(self) -> None:
        """Forget pictures until at most ``preview_bytes`` are held (call with the lock)."""
        held = self._held_locked()
        if held <= self.preview_bytes:
            return
        candidates = []
        for cam in self._cameras.values():
            current = cam.view.shot.uid if cam.view is not None else None
            candidates += [(uid == current, uid, cam, shot) for uid, shot in cam.shots().items()]
        candidates.sort(key=lambda c: (c[0], c[1]))  # older previews, then current pictures
        for _, uid, cam, shot in candidates:
            if held <= self.preview_bytes:
                break
            before = sum(len(j) for j in cam.jpegs.values())
            cam.forget(uid)
            held -= shot.image.nbytes + before - sum(len(j) for j in cam.jpegs.values())

    def add_preview(self, preview: Preview) -> None:
        """A new preview image.

        It is shown at once if its verdict is already known, or if no verdicts are
        flowing for this camera; otherwise it waits (at most ``HOLD_S``) for its verdict,
        so that the picture and the verdict drawn on it belong together.
        """
        now = time.time()
        image = fit_bytes(np.asarray(preview.image), MAX_PREVIEW_BYTES)
        with self._lock:
            cam = self._camera(preview.camera)
            cam.arrived += 1
            self._shot_uid += 1
            shot = _Shot(preview.key, preview.seq, image, cam.arrived, self._shot_uid)
            cam.recent_shots.append(shot)
            cam.arrivals.append(now)
            cam.newest_at = now
            found = cam.verdict_for(shot)
            if found is not None:
                cam.show(shot, found, True, now)
            elif (cam.view is None or cam.latest is None or now - cam.verdict_at > HOLD_S
                  or now - cam.shown_at > HOLD_S):
                cam.show(shot, cam.latest, False, now)
            self._trim_locked()
            self._version += 1

    def add_verdict(self, verdict: Verdict) -> None:
        """A classifier verdict: show the newer preview it belongs to, drawn with it."""
        now = time.time()
        with self._lock:
            cam = self._camera(verdict.camera)
            cam.verdict_at = now
            model = model_name(verdict.model)
            if cam.model and model != cam.model:
                self.events.add("warn", "model_changed", f"model changed on {verdict.camera}: "
                                f"{cam.model} -> {model} (from part {verdict.key or verdict.seq})",
                                now)
            cam.model = model
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
            now = time.time()
            self._part_times.append(now)
            if outcome.plc_written_ns is not None:
                self._latencies.append((outcome.plc_written_ns - outcome.capture_ns) / 1e6)
                self._last_write = {"key": outcome.key, "part_seq": outcome.part_seq,
                                    "outcome": kind, "reject": outcome.reject,
                                    "at": outcome.plc_written_ns / 1e9}
            if kind == "incomplete":
                missing = ", ".join(outcome.missing) or "a view"
                ev = self.events.recent("incomplete", INCOMPLETE_BANNER_S, now)
                n = ev[0].count + 1 if ev else 1
                self.events.add("warn", "incomplete",
                                f"{n} part{'s' if n > 1 else ''} rejected incomplete "
                                f"(latest {outcome.key or outcome.part_seq}: {missing} missing)",
                                now, merge="incomplete", subject=outcome.key)
            self._recent_parts.append({"key": outcome.key, "part_seq": outcome.part_seq,
                                       "outcome": kind})
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
        for name in sorted(verdicts)[:MAX_THUMB_TILES]:
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
        for name in (missing or [])[:MAX_THUMB_TILES]:
            tiles.append(placeholder([name.upper()[:14], "missing"]))
        label = [kind.replace("_", " ")[:18], "no preview"]
        thumb = thumbnail(tiles[:MAX_THUMB_TILES]) if tiles else placeholder(label)
        self._defect_uid += 1
        self._defects.appendleft(_Defect(
            uid=self._defect_uid, key=key, part_seq=part_seq, outcome=kind, at=time.time(),
            cameras={n: {"label": v.label, "score": _rounded(v.score, 3),
                         "defective": v.defective, "model": model_name(v.model)}
                     for n, v in verdicts.items()},
            missing=list(missing or []),
            thumb=jpeg(thumb),
        ))

    def set_health(self, beats: Beats, lags: Mapping[str, GroupLag] | None = None,
                   now: float | None = None) -> None:
        """Feed the current heartbeats (and per-agent group lag) to the health table.

        ``beats`` and ``lags`` are what :func:`procgraph.health.read_heartbeats` and
        :func:`procgraph.health.group_lag` return.
        """
        with self._lock:
            at = time.time() if now is None else now
            rows = self._tracker.update(beats, lags, now)
            for level, kind, text in health_events(self._health, rows):
                self.events.add(level, kind, text, at)
            self._health = rows
            self._health_at = at
            plc = self._plc_locked(at)
            if plc["state"] != self._plc_state:
                if plc["state"] in ("down", "stalled"):
                    self.events.add("bad", "plc_down",
                                    f"PLC link {plc['state']}: {plc['text']}", at)
                elif self._plc_state in ("down", "stalled"):
                    self.events.add("info", "plc_up", "PLC link back: parts are written again",
                                    at)
                self._plc_state = plc["state"]
            self._version += 1

    def _plc_locked(self, now: float) -> dict[str, Any]:
        """The PLC link as the HMI can tell it: the writer's heartbeat, its backlog and
        the age of its last write (call with the lock)."""
        row = next((r for r in self._health if r["agent"] == self.plc_agent), None)
        last = dict(self._last_write) if self._last_write else None
        age = round(now - last["at"], 1) if last else None
        if last is not None:
            last["age_s"] = age
        backlog = (row.get("lag") or 0) + (row.get("pending") or 0) if row else 0
        if row is None:
            state, text = ("ok", "writing") if age is not None and age < PLC_STALL_S else (
                "unknown", f"no heartbeat from agent {self.plc_agent!r}")
        elif row["status"] == "down":
            state, text = "down", f"PLC writer {self.plc_agent!r} has no heartbeat"
        elif backlog and (age > PLC_STALL_S if age is not None
                          else (row.get("uptime_s") or 0) > PLC_STALL_S):
            since = "no part written yet" if age is None else f"last write {age:.0f}s ago"
            state, text = "stalled", f"{backlog} parts waiting, {since}"
        else:
            state, text = "ok", "writing" if age is not None else "connected, no part yet"
        return {"state": state, "text": text, "agent": self.plc_agent, "last_write": last,
                "backlog": backlog}

    def _alerts_locked(self, now: float) -> list[dict[str, str]]:
        """What the degraded banner says (empty: the line is healthy)."""
        alerts: list[dict[str, str]] = []
        for row in self._health:
            if row["status"] == "down":
                alerts.append({"level": "bad", "text": f"{row['agent']} down"})
            elif row["status"] == "degraded":
                alerts.append({"level": "warn", "text": f"{row['agent']} degraded "
                               f"({row['alive']}/{row['expected']} alive)"})
            elif (row.get("lag") or 0) > LAG_BANNER:
                alerts.append({"level": "warn", "text": f"{row['agent']} behind "
                               f"({row['lag']} waiting)"})
        for ev in self.events.recent("agent_restarted", RESTART_BANNER_S, now):
            name = ev.text.split(" ", 1)[0]
            if not any(a["text"].startswith(f"{name} restarted") for a in alerts):
                alerts.append({"level": "warn", "text": f"{name} restarted "
                               f"{now - ev.last_at:.0f}s ago"})
        incomplete = self.events.recent("incomplete", INCOMPLETE_BANNER_S, now)
        if incomplete:
            n = incomplete[0].count
            alerts.append({"level": "bad", "text": f"{n} part{'s' if n > 1 else ''} rejected "
                           "incomplete"})
        plc = self._plc_locked(now)
        if plc["state"] in ("down", "stalled"):
            alerts.append({"level": "bad", "text": f"PLC link {plc['state']}"})
        if self._health_at and now - self._health_at > 5.0:
            alerts.append({"level": "warn", "text": f"health data {now - self._health_at:.0f}s "
                           "old"})
        return alerts

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
        try:
            data = jpeg(annotate(view.shot.image, view.verdict, view.matched))
        except Exception as exc:  # a preview that is no picture: say so, and go on
            data = jpeg(placeholder(["bad preview", type(exc).__name__[:18]]))
        with self._lock:
            if self._cameras.get(name) is cam and cam.view is not None:
                cam.jpegs[view.version] = data
                while len(cam.jpegs) > VIEW_HISTORY:
                    cam.jpegs.popitem(last=False)
                self._trim_locked()
        return data, view.version

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
        c: dict[str, Any] = dict(self._counts)
        parts = c["parts"]
        c["yield_pct"] = round(100.0 * c["ok"] / parts, 1) if parts else None
        c["yield_target_pct"] = self.yield_target_pct
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
                    "image": f"camera/{camera_ref(name)}.jpg",
                    "version": cam.version,
                    "has_image": view is not None,
                    "seq": view.shot.seq if view else None,
                    "key": view.shot.key if view else None,
                    "fps": round(cam.fps(now), 1),
                    "age_s": round(now - cam.newest_at, 1) if view else None,
                    "verdict": None if v is None or view is None else {
                        "label": v.label, "score": _rounded(v.score, 3),
                        "defective": v.defective, "seq": v.seq, "matched": view.matched,
                        "model": model_name(v.model),
                        "inference_ms": _rounded(v.inference_ms, 2),
                    },
                    "ok": cam.ok,
                    "defective": cam.defective,
                })
            defects = [{
                "index": i, "uid": d.uid, "key": d.key, "part_seq": d.part_seq,
                "outcome": d.outcome, "at": d.at, "cameras": d.cameras,
                "missing": d.missing,
            } for i, d in enumerate(self._defects)]
            lat = list(self._latencies)
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
                "events": self.events.as_list(),
                "alerts": self._alerts_locked(now),
                "plc": self._plc_locked(now),
                "latency": {"p50_ms": _rounded(percentile(lat, 50), 1),
                            "p99_ms": _rounded(percentile(lat, 99), 1), "n": len(lat)},
            }

