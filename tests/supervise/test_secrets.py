"""Broker passwords (issue 9 items 14, 15, 17): never printed, never on a command line, a wrong
one fails fast, an embedded broker beyond loopback always has one."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pgtest_procs import cmdline, descendants, env, kill_family
from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker, free_port, password_file, server_binary
from procgraph.errors import BrokerError
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor

TESTS = Path(__file__).resolve().parents[1]
PASSWORD = "item14-S3cret-pw"
GRAPH = """
name: {name}
brokers:
  main: {broker}
agents:
  numbers: {{class: "pgtest_agents:Numbers", params: {{count: 20}}}}
  recorder: {{class: "pgtest_agents:Recorder", inputs: {{items: numbers.out}}}}
"""


@pytest.fixture(scope="module")
def locked() -> Iterator[EmbeddedBroker]:
    """A loopback Valkey that requires PASSWORD."""
    with EmbeddedBroker(password=PASSWORD) as broker:
        yield broker


def _graph(folder: Path, name: str, broker: str = "{}") -> Path:
    shutil.copy(TESTS / "pgtest_agents.py", folder / "pgtest_agents.py")
    graph = folder / f"{name}.yaml"
    graph.write_text(GRAPH.format(name=name, broker=broker))
    return graph


def _procgraph(*args: str, extra_env: dict[str, str] | None = None,
               timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "procgraph", *args], capture_output=True,
                          text=True, env={**env(), **(extra_env or {})}, timeout=timeout_s)


def test_item14_password_not_printed_nor_on_any_command_line(locked: EmbeddedBroker,
                                                             tmp_path: Path) -> None:
    """Issue 9 item 14: `run` with the URL in $PROCGRAPH_REDIS: the line works, no output and
    no /proc/PID/cmdline of the run or of its children (replicas, guard) holds the password;
    `run --redis URL` warns that a command line is world-readable."""
    graph = _graph(tmp_path, "secrets14")
    client = redis.Redis.from_url(locked.url)
    client.delete("pgtest:recorder:seen")
    proc = subprocess.Popen(
        [sys.executable, "-m", "procgraph", "run", str(graph), "--state-dir",
         str(tmp_path / "state")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**env(), "PROCGRAPH_REDIS": locked.url}, start_new_session=True)
    try:
        wait_for(lambda: client.scard("pgtest:recorder:seen") >= 20, 30,
                 "the line to run on the password broker")
        family = descendants(proc.pid)
        assert len(family) >= 3  # guard + two replicas
        for pid, line in {proc.pid: cmdline(proc.pid), **family}.items():
            assert PASSWORD not in line, (pid, line)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        kill_family(proc.pid)
    assert PASSWORD not in out, out
    warned = _procgraph("run", str(graph), "--redis", locked.url, "--duration", "0.5",
                        "--state-dir", str(tmp_path / "state"))
    assert "warning: --redis carries a password" in warned.stderr
    assert PASSWORD not in warned.stdout + warned.stderr


def test_item14_tools_mask_the_password(locked: EmbeddedBroker, tmp_path: Path) -> None:
    """Issue 9 item 14: a wrong password, and `model list`'s title, never print the password:
    top, tap, model and record, each one `error:` line with the URL masked."""
    graph = _graph(tmp_path, "tools14")
    wrong = f"redis://:wrong-{PASSWORD}@127.0.0.1:{locked.port}"
    for args in (["top", str(graph), "--once"], ["tap", "pg:x:y:z", "--count", "1"],
                 ["model", "list"], ["record", str(graph), "-o", str(tmp_path / "r.pgrec"),
                                     "--count", "1"]):
        done = _procgraph(*args, extra_env={"PROCGRAPH_REDIS": wrong}, timeout_s=20)
        said = done.stdout + done.stderr
        assert done.returncode == 1, (args, said)
        assert PASSWORD not in said and "Traceback" not in said, (args, said)
        assert "wrong password or user" in said, (args, said)
        assert [ln for ln in said.splitlines() if ln.startswith("error:")], (args, said)
    right = {"PROCGRAPH_REDIS": locked.url, "COLUMNS": "200"}
    pushed = _procgraph("model", "push", "parts-front",
                        str(TESTS.parent / "models" / "parts-front.onnx"), extra_env=right)
    assert pushed.returncode == 0, pushed.stderr
    listed = _procgraph("model", "list", extra_env=right)
    assert "parts-front" in listed.stdout, listed.stdout + listed.stderr
    assert "S3cret" not in listed.stdout + listed.stderr  # the table's title: models at URL


def test_item15_run_with_a_wrong_password_fails_fast(locked: EmbeddedBroker,
                                                     tmp_path: Path) -> None:
    """Issue 9 item 15: `run` against a broker with a wrong password exits 1 at once with one
    error line (broker, masked URL, reason, fix) instead of retrying forever."""
    graph = _graph(tmp_path, "secrets15")
    started = time.monotonic()
    done = _procgraph("run", str(graph), "--state-dir", str(tmp_path / "state"),
                      extra_env={"PROCGRAPH_REDIS": f"redis://:nope@127.0.0.1:{locked.port}"})
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert time.monotonic() - started < 8, said  # --connect-timeout is 10 s
    errors = [ln for ln in said.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "broker 'main'" in errors[0], said
    assert "wrong password or user" in errors[0] and ":***@127.0.0.1" in errors[0], said
    assert "nope" not in said and "Traceback" not in said


def test_item17_embedded_broker_on_all_interfaces_gets_a_password(tmp_path: Path) -> None:
    """Issue 9 item 17: an embedded broker with host 0.0.0.0 starts with a generated password
    (kept in the state folder, mode 0600; not on its command line) and without protected mode
    off unless it has one; the line's agents get it; a client without it is refused."""
    with pytest.raises(BrokerError, match=r"beyond loopback.*needs a password"):
        EmbeddedBroker(host="0.0.0.0")
    loopback = EmbeddedBroker()  # no password: protected mode stays on
    open_args = loopback.command(server_binary())
    loopback.close()
    assert open_args[open_args.index("--protected-mode") + 1] == "yes"
    port = free_port("0.0.0.0")
    graph = _graph(tmp_path, "secrets17",
                   f"{{host: 0.0.0.0, port: {port}, persistence: none}}")
    log = io.StringIO()
    sup = Supervisor(load_graph(graph), out=log, colour=False, state_dir=tmp_path / "state")
    sup.start_in_thread()
    try:
        secret = password_file("secrets17", "main", tmp_path / "state")
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        word = secret.read_text().strip()
        assert len(word) >= 24
        broker = sup.brokers["main"]
        assert broker.proc is not None
        assert word not in cmdline(broker.proc.pid)  # valkey shows "valkey-server 0.0.0.0:P"
        args = broker.command(server_binary())
        assert word not in " ".join(args) and args[args.index("--bind") + 1] == "0.0.0.0"
        assert args[1].endswith("broker-auth.conf")  # requirepass, from a 0600 file
        assert not list(broker.dir.glob("broker-auth.conf"))  # read by the server, removed
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()
        good = redis.Redis(port=port, password=word)
        wait_for(lambda: good.scard("pgtest:recorder:seen") >= 20, 30,
                 "the line's agents to use the generated password")
        good.close()
    finally:
        sup.shutdown()
        print(log.getvalue()[-3000:])
    assert word not in log.getvalue()
    assert ":***@127.0.0.1" in log.getvalue() and str(secret) in log.getvalue()
    assert os.path.exists(secret)  # kept for the next run and for tools on this machine
