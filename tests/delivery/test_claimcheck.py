"""Issue 12: same-host frames through shared memory (claim-check), against real brokers.

Ownership and reclamation (a slot comes back only once every reading group acknowledged its
entry, or it was trimmed, and no live reader holds the decoded array), the inline fallback
(ring full, another host, ``shm: false``), stale references dead-lettered with a reason, and
crash safety with real processes and kill -9: a restarted producer keeps slots still
referenced, a killed reader's holds are released, and a line loses, corrupts or doubles no
frame at its sink.
"""

from __future__ import annotations

import gc
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from pgtest_util import wait_for
from procgraph import Message, codec
from procgraph.brokers import EmbeddedBroker
from procgraph.constants import dead_letter_key
from procgraph.delivery import claimcheck as cc
from procgraph.delivery import shmfiles, shmreader
from procgraph.errors import CodecError
from procgraph.graph import load_graph
from procgraph.graph.plan import GraphPlan
from procgraph.supervisor import Supervisor
from procgraph.transport.shmring import (
    SHM_DIR,
    ShmRing,
    broker_digest,
    broker_location,
    ring_name,
)

STREAM = "pg:cc:cam:frames"


class Frame(Message):
    """A test frame with its checksum."""

    crc: int
    pixels: np.ndarray


def _frame(n: int, size: int = 256 * 1024) -> Frame:
    pixels = np.random.default_rng(n).integers(0, 255, size, dtype=np.uint8)
    return Frame(crc=zlib.crc32(pixels), key=f"f{n}", pixels=pixels)


@pytest.fixture
def ring_path() -> Iterator[Path]:
    path = SHM_DIR / f"procgraph.cctest{os.getpid()}.cam.0.frames"
    yield path
    path.unlink(missing_ok=True)


def _stash(client: redis.Redis, path: Path, mb: float = 2.0,
           groups: tuple[str, ...] = ("g",)) -> cc.FrameStash:
    ring = ShmRing.open(path, int(mb * 2**20), cc.SLOTS, list(groups))
    return cc.FrameStash(ring, client, STREAM, list(groups))


def _send(stash: cc.FrameStash, client: redis.Redis, msg: Message) -> bytes:
    fields = stash(codec.encode(msg))
    entry_id: bytes = client.xadd(STREAM, fields)
    stash.on_sent([fields], [entry_id])
    return entry_id


def _read(client: redis.Redis, group: str = "g", count: int = 100) -> list[tuple[bytes, dict]]:
    got = client.xreadgroup(group, "c", {STREAM: ">"}, count=count)
    return list(got[0][1]) if got else []


@pytest.fixture
def reader() -> Iterator[shmreader.ShmReader]:
    store = shmreader.ShmReader(group="g")
    codec.register_payload_store(store)
    yield store
    codec.register_payload_store(shmreader.ShmReader())


def test_reference_view_hold_and_reclaim_by_acks(broker, ring_path, reader) -> None:
    """A frame travels as a reference and decodes as a read-only view of the ring (no copy);
    its slot comes back only after the ack AND once the array is gone."""
    client = redis.Redis.from_url(broker.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = _stash(client, ring_path)
    _send(stash, client, _frame(1))
    (entry_id, fields), = _read(client)
    assert b"a:pixels" not in fields and len(fields[b"h"]) < 1000
    msg = codec.decode(fields, Frame)
    assert zlib.crc32(msg.pixels) == msg.crc and not msg.pixels.flags.writeable
    slot = next(iter(stash.ring.live.values()))
    stash.ring.write(slot, b"\x07" * slot.length)  # the ring's bytes ARE the array's
    assert int(msg.pixels[0]) == 7
    assert stash.reclaim() == 0  # not acknowledged
    client.xack(STREAM, "g", entry_id)
    view = msg.pixels[10:20]
    del msg
    _collect()
    assert stash.reclaim() == 0 and reader.holding == 1  # a slice still holds it
    del view
    _collect()
    assert reader.holding == 0 and stash.reclaim() == 1 and not stash.ring.live


def test_full_ring_goes_inline_and_trimmed_entries_free_slots(valkey, ring_path,
                                                                reader) -> None:
    """Never a wait, never a drop: with the ring full, frames go inline; entries trimmed
    from the stream (never read) free their slots."""
    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = _stash(client, ring_path, mb=1.0)  # 4 frames of 256 KiB
    for n in range(8):
        _send(stash, client, _frame(n))
    assert (stash.stashed, stash.inline) == (4, 4)
    entries = _read(client)
    assert [b"a:pixels" in f for _, f in entries] == [False] * 4 + [True] * 4
    for _, fields in entries:
        msg = codec.decode(fields, Frame)
        assert zlib.crc32(msg.pixels) == msg.crc
    del msg
    _collect()
    client.xtrim(STREAM, maxlen=0)  # read and pending, but gone from the stream
    assert stash.reclaim() == 4


def test_stale_reference_other_host_and_missing_ring_are_codec_errors(valkey, ring_path,
                                                                      reader) -> None:
    """A reused slot, another host's reference and a missing ring each raise CodecError
    (the consumer dead-letters it) with the reason."""
    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = _stash(client, ring_path, mb=1.0)
    _send(stash, client, _frame(0))
    (entry_id, old), = _read(client)
    client.xack(STREAM, "g", entry_id)
    assert stash.reclaim() == 1
    for n in range(1, 5):  # the slot is reused
        _send(stash, client, _frame(n))
    with pytest.raises(CodecError, match="reclaimed"):
        codec.decode(old, Frame)
    fields = dict(_read(client)[0][1])
    header = codec.read_header(fields)
    ref = header["arrays"]["pixels"]["ref"]
    other = ref.replace(shmreader.host_id(), "0" * 16)
    with pytest.raises(shmreader.StaleReference, match="another host"):
        shmreader.ShmReader("g").get(other)
    ring_path.unlink()
    with pytest.raises(shmreader.StaleReference, match="gone"):
        shmreader.ShmReader("g").get(ref)
    assert shmreader.inline_refs(fields)[1] is not None  # record says it could not


def test_discarded_attempt_frees_its_slot_and_record_inlines(valkey, ring_path) -> None:
    """A stashed entry never sent (a failed handler attempt) gives its slot back at the next
    send; ``inline_refs`` (record) puts the pixels back into the entry."""
    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = _stash(client, ring_path)
    stash(codec.encode(_frame(0)))  # discarded
    _send(stash, client, _frame(1))
    assert len(stash.ring.live) == 1
    fields = client.xrange(STREAM)[0][1]
    inline, problem = shmreader.inline_refs(fields)
    assert problem is None and b"a:pixels" in inline
    msg = codec.decode(inline, Frame)
    assert zlib.crc32(msg.pixels) == msg.crc


def test_ring_is_made_at_the_first_large_frame_only(valkey, ring_path) -> None:
    """A port that sends small messages makes no ring file; the first frame makes it."""
    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = cc.FrameStash(lambda: ShmRing.open(ring_path, 2**20, cc.SLOTS, ["g"]), client,
                          STREAM, ["g"])
    _send(stash, client, _frame(0, size=1000))
    assert not ring_path.exists() and stash.reclaim() == 0
    _send(stash, client, _frame(1))
    assert ring_path.exists() and stash.stashed == 1


def test_record_keeps_the_pixels_and_says_when_it_cannot(valkey, ring_path, reader, tmp_path,
                                                         caplog) -> None:
    """``procgraph record`` on the producer's host writes the frame's pixels into the file;
    a reference it cannot resolve is recorded as it is, with one warning naming the stream."""
    from procgraph.recording import Recorder, RecordingWriter, read_all

    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = _stash(client, ring_path)
    _send(stash, client, _frame(0))
    ring_path.unlink()  # the second frame's ring is gone before it is recorded
    stash = _stash(client, ring_path)
    _send(stash, client, _frame(1))
    fields = client.xrange(STREAM)[1][1]
    broken = dict(fields)
    broken[b"h"] = fields[b"h"].replace(shmreader.host_id().encode(), b"0" * 16)
    client.xadd(STREAM, broken)
    recorder = Recorder({valkey.url: [STREAM]}, from_start=True)
    with RecordingWriter(tmp_path / "r.pgrec") as writer:
        recorder.read_into(writer, wait_s=0.1)
    recorder.close()
    records = read_all(tmp_path / "r.pgrec")[1]
    assert [b"a:pixels" in dict(r.fields) for r in records] == [False, True, False]
    assert recorder.unresolved == 2 and "recorded without its pixels" in caplog.text
    msg = codec.decode(dict(records[1].fields), Frame)
    assert zlib.crc32(msg.pixels) == msg.crc


def test_who_uses_shared_memory_is_decided_from_the_plan(tmp_path) -> None:
    """Only same-node process readers; ``shm: false`` per port or per graph turns it off."""
    (tmp_path / "ccmod.py").write_text(_AGENTS)

    def plan(extra: str = "", sink: str = ", node: a", top: str = "") -> tuple[bool, ...]:
        (tmp_path / "g.yaml").write_text(textwrap.dedent(f"""
            name: ccplan
            {top}
            agents:
              cam: {{class: "ccmod:FrameSource", node: a {extra}}}
              sink: {{class: "ccmod:FrameSink", inputs: {{frames: cam.frames}} {sink}}}
              """))
        p = load_graph(tmp_path / "g.yaml")
        cam = p.agents["cam"]
        return tuple(cc.uses_shm(p, cam, o) for o in cam.outputs)

    assert plan() == (True,)
    assert plan(sink=", node: b") == (False,)
    assert plan(sink=", node: a, runtime: docker") == (False,)
    assert plan(extra=", outputs: {frames: {shm: false}}") == (False,)
    assert plan(top="shm: false") == (False,)


def test_line_clean_up_at_start_and_stop(tmp_path: Path) -> None:
    """At start: stale rings go, rings of the plan stay (still referenced); at stop: the
    node's rings go; another node's readers' presence files stay."""
    (tmp_path / "ccmod.py").write_text(_AGENTS)
    (tmp_path / "g.yaml").write_text(textwrap.dedent("""
        name: ccclean
        agents:
          cam: {class: "ccmod:FrameSource", node: a}
          sink: {class: "ccmod:FrameSink", node: b, inputs: {frames: cam.frames}}
        """))
    plan = load_graph(tmp_path / "g.yaml")
    url, other = f"redis://127.0.0.1:6390/{os.getpid()}", f"redis://127.0.0.1:6391/{os.getpid()}"
    urls = dict.fromkeys(plan.brokers, url)
    d = broker_digest(url)
    names = [f"procgraph.ccclean.{d}.cam.0.frames", f"procgraph.ccclean.{d}.old.0.frames",
             f"procgraph.ccclean.{d}.cam.frames.reader-sink"]
    assert names[0] == ring_name("ccclean", "cam", 0, "frames", url)
    assert names[2] == shmfiles.presence_name("ccclean", "cam", "frames", "sink", url)
    # the same graph name on another broker (another line): never touched
    theirs = [ring_name("ccclean", "old", 0, "frames", other),
              shmfiles.presence_name("ccclean", "cam", "frames", "sink", other)]
    for name in names + theirs:
        (SHM_DIR / name).touch()
    try:
        assert shmfiles.clean_line_rings(plan, "a", stopping=False, urls=urls) == [names[1]]
        assert shmfiles.clean_line_rings(plan, "a", stopping=True, urls=urls) == [names[0]]
        assert (SHM_DIR / names[2]).exists()
        assert shmfiles.clean_line_rings(plan, None, stopping=True, urls=urls) == [names[2]]
        assert all((SHM_DIR / name).exists() for name in theirs)
    finally:
        for name in names + theirs:
            (SHM_DIR / name).unlink(missing_ok=True)


def test_names_carry_the_brokers_location_without_credentials() -> None:
    """The same stream on the same broker shares its files (whatever the credentials or
    options in the URL); another host, port, database or socket does not."""
    same = ["redis://127.0.0.1:6379", "redis://:secret@127.0.0.1:6379/0",
            "rediss://user:pw@127.0.0.1:6379?ssl_cert_reqs=none", "redis://127.0.0.1/0",
            "redis://127.0.0.1:6379?db=0"]
    assert len({broker_digest(u) for u in same}) == 1
    others = ["redis://127.0.0.1:6380", "redis://127.0.0.1:6379/1", "redis://10.0.0.2:6379",
              "unix:///run/valkey.sock", "unix:///run/valkey.sock?db=1",
              "unix:///tmp/other.sock"]
    assert len({broker_digest(u) for u in [same[0], *others]}) == 1 + len(others)
    assert "secret" not in broker_location(same[1])
    assert broker_location("unix://:pw@/run/v.sock?db=2") == "unix:/run/v.sock?db=2"
    assert re.fullmatch(r"[0-9a-f]{8}", broker_digest(same[0]))


def test_a_line_on_its_embedded_broker_names_files_after_its_state_folder(
        tmp_path: Path) -> None:
    """The embedded broker gets a new free port each run; the files are named after the
    line's state folder instead, so the next run of the line finds (and cleans) what a
    killed run left, and another state folder is another line."""
    (tmp_path / "ccmod.py").write_text(_AGENTS)
    (tmp_path / "g.yaml").write_text(textwrap.dedent("""
        name: ccstable
        brokers: {main: {url: embedded}}
        agents:
          cam: {class: "ccmod:FrameSource"}
          sink: {class: "ccmod:FrameSink", inputs: {frames: cam.frames}}
        """))
    plan = load_graph(tmp_path / "g.yaml")
    keys = []
    for _ in range(2):
        sup = Supervisor(plan, out=io.StringIO(), colour=False, state_dir=tmp_path / "state")
        sup.line.start()
        try:
            keys.append(sup._shm_keys())
            stale = SHM_DIR / ring_name("ccstable", "gone", 0, "frames", keys[-1]["main"])
            stale.touch()  # a ring of a port the graph no longer has, left by a killed run
            assert shmfiles.clean_line_rings(plan, None, stopping=False,
                                       urls=sup._shm_names()) == [stale.name]
        finally:
            for broker in sup.line.brokers.values():
                broker.close()
    assert keys[0] == keys[1] and keys[0]["main"].startswith("line:")
    other = Supervisor(plan, out=io.StringIO(), colour=False, state_dir=tmp_path / "other")
    other.line.brokers = {"main": None}  # type: ignore[dict-item]  # owned, not started
    assert other._shm_keys() != keys[0]


def _collect() -> None:
    """gc.collect() to release the holds of dropped arrays. Sockets that earlier tests left to
    the collector may be finalized here too; their unclosed-socket warnings are theirs, not
    this test's, and are dropped (any other unraisable error still fails the test)."""
    foreign: list[object] = []
    hook = sys.unraisablehook

    def keep(u: Any) -> None:
        if isinstance(u.exc_value, ResourceWarning) and "socket" in str(u.exc_value):
            foreign.append(u)
        else:
            hook(u)

    sys.unraisablehook = keep
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


# -- real processes, kill -9 --------------------------------------------------------------------
_PRODUCER = """
import sys, time, zlib, numpy as np, redis
from pathlib import Path
from procgraph import Message, codec
from procgraph.delivery import claimcheck as cc
from procgraph.transport.shmring import ShmRing
class Frame(Message):
    crc: int
    pixels: np.ndarray
url, stream, path, start, stop = sys.argv[1:6]
client = redis.Redis.from_url(url)
stash = cc.FrameStash(ShmRing.open(Path(path), 2 << 20, cc.SLOTS, ["g"]), client, stream, ["g"])
for n in range(int(start), int(stop)):
    px = np.random.default_rng(n).integers(0, 255, 256 * 1024, dtype=np.uint8)
    fields = stash(codec.encode(Frame(crc=zlib.crc32(px), key=f"f{n}", pixels=px)))
    eid = client.xadd(stream, fields)
    if n < int(stop) - 1:
        stash.on_sent([fields], [eid])  # the last one: killed before its id is known
print("sent", stash.stashed, stash.inline, flush=True)
time.sleep(60)
"""

_READER = """
import sys, time, redis
from procgraph import codec
from procgraph.delivery import shmreader
url, stream = sys.argv[1:3]
codec.register_payload_store(shmreader.ShmReader(group="g"))
client = redis.Redis.from_url(url)
held = []
for eid, fields in client.xreadgroup("g", "r", {stream: ">"}, count=100)[0][1]:
    h = codec.read_header(fields)
    held.append(codec._decode_array("pixels", h["arrays"]["pixels"], fields))
    client.xack(stream, "g", eid)
print("held", len(held), flush=True)
time.sleep(60)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"helper process died (rc {proc.wait()})"
    proc.line = line.split()  # type: ignore[attr-defined]
    return proc


def _kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_restarted_producer_keeps_referenced_slots(valkey, ring_path, reader) -> None:
    """kill -9 of a producer (one entry sent, its id not yet recorded); the restarted one
    reopens the ring and never overwrites a slot still referenced: the reader, reading only
    afterwards, gets every frame intact."""
    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    first = _spawn(_PRODUCER, valkey.url, STREAM, str(ring_path), "0", "6")
    assert first.line == ["sent", "6", "0"]  # type: ignore[attr-defined]
    _kill9(first)
    second = _spawn(_PRODUCER, valkey.url, STREAM, str(ring_path), "6", "14")
    assert second.line == ["sent", "2", "6"]  # type: ignore[attr-defined]  # 2 MiB: 8 fit
    _kill9(second)
    entries = _read(client)
    keys = []
    for _, fields in entries:
        msg = codec.decode(fields, Frame)
        assert zlib.crc32(msg.pixels) == msg.crc, f"{msg.key} corrupted"
        keys.append(msg.key)
    assert keys == [f"f{n}" for n in range(14)]
    del msg
    _collect()
    for entry_id, _ in entries:
        client.xack(STREAM, "g", entry_id)
    third = _stash(client, ring_path)
    assert third.reclaim() == 8 and not third.ring.live  # the unknown-id slots too


def test_killed_reader_releases_its_holds(valkey, ring_path) -> None:
    """A reader killed while it holds decoded arrays (acked) holds nothing afterwards."""
    client = redis.Redis.from_url(valkey.url)
    client.xgroup_create(STREAM, "g", id="$", mkstream=True)
    stash = _stash(client, ring_path)
    for n in range(3):
        _send(stash, client, _frame(n))
    held = _spawn(_READER, valkey.url, STREAM)
    assert held.line == ["held", "3"]  # type: ignore[attr-defined]
    assert stash.reclaim() == 0
    _kill9(held)
    assert stash.reclaim() == 3


_AGENTS = '''
import zlib
import numpy as np
from procgraph import Agent, Input, Message, Output


class Frame(Message):
    crc: int
    n: int
    pixels: np.ndarray


class FrameSource(Agent):
    class Params(Agent.Params):
        count: int = 100
        size: int = 256 * 1024

    frames = Output(Frame)

    def run(self) -> None:
        start = int(self.state.get("next", 0))
        for n in range(start, self.params.count):
            if not self.running:
                return
            px = np.random.default_rng(n).integers(0, 255, self.params.size, dtype=np.uint8)
            self.frames.send(Frame(crc=zlib.crc32(px), n=n, key=f"f{n}", pixels=px))
            self.state.put("next", n + 1)
            self.flush()
            self.sleep(0.004)
        while self.running:
            self.sleep(0.2)


class FrameSink(Agent):
    frames = Input(Frame)

    def setup(self) -> None:
        self.client = self.context.redis()
        self.kept = []

    def on_frames(self, msg: Frame) -> None:
        good = zlib.crc32(msg.pixels) == msg.crc
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd("cc:seen", msg.key)
        pipe.incr("cc:handled")
        pipe.incr("cc:bad" if not good else "cc:good")
        pipe.incr("cc:shm" if not msg.pixels.flags.writeable else "cc:inline")
        pipe.execute()
        self.kept = [*self.kept[-3:], msg.pixels]  # holds a few after their ack
'''


@pytest.mark.slow
def test_line_with_kill9_loses_corrupts_and_doubles_nothing(valkey, tmp_path) -> None:
    """A real line (source -> sink, small ring); the sink and then the source killed -9 and
    restarted: every frame reaches the sink once by key, none corrupted, most through shared
    memory; the line's rings are gone after the stop clean-up."""
    (tmp_path / "ccmod.py").write_text(_AGENTS)
    (tmp_path / "g.yaml").write_text(textwrap.dedent("""
        name: cckill
        agents:
          cam: {class: "ccmod:FrameSource", params: {count: 300},
                outputs: {frames: {shm_mb: 2}}}
          sink: {class: "ccmod:FrameSink", inputs: {frames: cam.frames}}
        """))
    plan = load_graph(tmp_path / "g.yaml")
    client = redis.Redis.from_url(valkey.url)
    sup = Supervisor(plan, redis_url=valkey.url, out=io.StringIO(), colour=False)
    urls = dict.fromkeys(plan.brokers, valkey.url)
    ring = SHM_DIR / ring_name("cckill", "cam", 0, "frames", valkey.url)
    presence = SHM_DIR / shmfiles.presence_name("cckill", "cam", "frames", "sink", valkey.url)
    assert shmfiles.clean_line_rings(plan, None, stopping=False, urls=urls) == []
    sup.start_in_thread()
    try:
        def handled() -> int:
            return int(client.get("cc:handled") or 0)

        def kill(agent: str) -> None:
            victim = next(r for r in sup.replicas if r.agent.name == agent)
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)

        wait_for(lambda: handled() > 60, 30, "the sink to get 60 frames")
        kill("sink")
        wait_for(lambda: handled() > 150, 30, "the restarted sink to go on")
        kill("cam")
        assert ring.exists()
        wait_for(lambda: client.scard("cc:seen") == 300, 40, "all 300 frames at the sink")
    finally:
        sup.shutdown()  # every frame was read and acked: the line's files go with it
    assert not ring.exists()
    assert not presence.exists()
    assert int(client.get("cc:bad") or 0) == 0
    assert int(client.get("cc:shm") or 0) > 150
    assert handled() - 300 <= 2 * 64 + 2  # only what was in hand at a kill came again


def _twin_plan(folder: Path, count: int) -> GraphPlan:
    folder.mkdir()
    (folder / "ccmod.py").write_text(_AGENTS)
    (folder / "g.yaml").write_text(textwrap.dedent(f"""
        name: cctwin
        agents:
          cam: {{class: "ccmod:FrameSource", params: {{count: {count}}},
                outputs: {{frames: {{shm_mb: 2}}}}}}
          sink: {{class: "ccmod:FrameSink", inputs: {{frames: cam.frames}}}}
        """))
    return load_graph(folder / "g.yaml")


def test_two_lines_of_one_graph_name_on_two_brokers_keep_apart(valkey: EmbeddedBroker,
                                                               tmp_path: Path) -> None:
    """Two lines with the same graph name, each on its own broker, run at the same time: each
    has its own ring and presence files (named by its broker), every frame of both reaches its
    sink intact through shared memory, and one line's start and stop leave the other's files."""
    plan_a, plan_b = _twin_plan(tmp_path / "a", 80), _twin_plan(tmp_path / "b", 100000)
    stream = plan_a.agents["cam"].outputs[0].stream
    with EmbeddedBroker() as other:
        a, b = redis.Redis.from_url(valkey.url), redis.Redis.from_url(other.url)
        ring_a, ring_b = (SHM_DIR / ring_name("cctwin", "cam", 0, "frames", u)
                          for u in (valkey.url, other.url))
        seen_a, seen_b = (SHM_DIR / shmfiles.presence_name("cctwin", "cam", "frames", "sink", u)
                          for u in (valkey.url, other.url))
        files = [ring_a, ring_b, seen_a, seen_b]
        assert len(set(files)) == 4
        for path in files:  # left by an earlier, killed run on these ports
            path.unlink(missing_ok=True)
        sup_a = Supervisor(plan_a, redis_url=valkey.url, out=io.StringIO(), colour=False,
                           state_dir=tmp_path / "a" / "state")
        sup_b = Supervisor(plan_b, redis_url=other.url, out=io.StringIO(), colour=False,
                           state_dir=tmp_path / "b" / "state")
        try:
            sup_b.start_in_thread()
            wait_for(lambda: int(b.get("cc:shm") or 0) > 10, 30, "line b to use its ring")
            try:
                sup_a.start_in_thread()  # its start clean-up leaves line b's files
                wait_for(lambda: a.scard("cc:seen") == 80, 40, "all 80 frames of line a")
                assert all(path.exists() for path in files)
            finally:
                sup_a.shutdown()
            assert not ring_a.exists() and not seen_a.exists()
            assert ring_b.exists() and seen_b.exists()  # line a's stop left line b's files
            after = int(b.get("cc:handled") or 0)
            wait_for(lambda: int(b.get("cc:handled") or 0) > after + 30, 30,
                     "line b to go on after line a stopped")
        finally:
            sup_b.shutdown()
            left = [path for path in files if path.exists()]
            for path in left:
                path.unlink(missing_ok=True)
        assert left in ([], [ring_b])  # b's ring stays while it has frames not read yet
        seen = {k.decode() if isinstance(k, bytes) else k for k in a.smembers("cc:seen")}
        assert seen == {f"f{n}" for n in range(80)}
        # line b was stopped while sending: what it had not read yet is still in its stream
        # (and its ring); a frame gone stale would be dead-lettered
        for client in (a, b):
            seen = {k.decode() if isinstance(k, bytes) else k for k in client.smembers("cc:seen")}
            assert int(client.get("cc:bad") or 0) == 0
            assert not client.xlen(dead_letter_key(stream))
            assert int(client.get("cc:shm") or 0) > len(seen) // 2
