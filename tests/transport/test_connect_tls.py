"""TLS brokers (issue 9 item 16): a graph's ``tls: {ca, cert, key}`` against Debian's redis-server.

The certificates are made by the test with the ``openssl`` CLI: a CA, a server certificate for
localhost/127.0.0.1 and a client certificate (redis-server asks for one: tls-auth-clients yes).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pgtest_procs import kill_pid
from pgtest_util import wait_for
from procgraph.brokers import free_port, resolve_broker_urls
from procgraph.errors import BrokerRefused, GraphError
from procgraph.graph import load_graph
from procgraph.supervisor import Supervisor
from procgraph.transport import retry

TESTS = Path(__file__).resolve().parents[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certs(folder: Path, prefix: str = "") -> None:
    """``{prefix}ca.pem``, ``server.pem``/``server.key`` and ``client.pem``/``client.key``."""
    ca = f"{prefix}ca"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN=procgraph test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=folder)
    for who, san in ((f"{prefix}server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                     (f"{prefix}client", "subjectAltName=DNS:client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout",
                 f"{who}.key", "-out", f"{who}.csr", cwd=folder)
        (folder / f"{who}.ext").write_text(san + "\n")
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out",
                 f"{who}.pem", cwd=folder)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """redis-server speaking TLS only (``--port 0``) on a free loopback port."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("tls")
    make_certs(folder)
    make_certs(folder, prefix="other-")  # a CA that did not sign the server's certificate
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(folder / "server.pem"), "--tls-key-file",
         str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.pem"),
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = redis.Redis(host="localhost", port=port, ssl=True,
                             ssl_ca_certs=str(folder / "ca.pem"),
                             ssl_certfile=str(folder / "client.pem"),
                             ssl_keyfile=str(folder / "client.key"), socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, 10, "the TLS redis-server to answer")
        client.close()
        yield port, folder
    finally:
        kill_pid(proc.pid)
        proc.wait()


def _graph(folder: Path, port: int, tls: str, name: str = "tlsline") -> Path:
    shutil.copy(TESTS / "pgtest_agents.py", folder / "pgtest_agents.py")
    graph = folder / f"{name}.yaml"
    graph.write_text(f"""
name: {name}
brokers:
  main: {{url: "rediss://localhost:{port}", tls: {tls}}}
agents:
  numbers: {{class: "pgtest_agents:Numbers", params: {{count: 30}}}}
  recorder: {{class: "pgtest_agents:Recorder", inputs: {{items: numbers.out}}}}
""")
    return graph


def test_item16_a_line_runs_over_tls_with_ca_and_client_certificate(
        tls_broker: tuple[int, Path], tmp_path: Path) -> None:
    """Issue 9 item 16: tls {ca, cert, key} in the graph (relative paths) reach every client."""
    port, folder = tls_broker
    for name in ("ca.pem", "client.pem", "client.key"):
        shutil.copy(folder / name, tmp_path / name)
    graph = _graph(tmp_path, port, "{ca: ca.pem, cert: client.pem, key: client.key}")
    plan = load_graph(graph)
    url = resolve_broker_urls(plan)["main"]
    assert url.startswith(f"rediss://localhost:{port}?") and "ssl_ca_certs=" in url
    check = redis.Redis.from_url(url)
    check.delete("pgtest:recorder:seen")
    log = io.StringIO()
    sup = Supervisor(plan, out=log, colour=False)
    sup.start_in_thread()
    try:
        wait_for(lambda: check.scard("pgtest:recorder:seen") >= 30, 30,
                 "30 items handled over TLS")
    finally:
        sup.shutdown()
        print(log.getvalue()[-3000:])
    assert {k.decode() for k in check.smembers("pgtest:recorder:seen")} == {
        f"k{n}" for n in range(30)}
    check.close()


def test_item16_untrusted_certificate_fails_fast(tls_broker: tuple[int, Path],
                                                 tmp_path: Path) -> None:
    """Issue 9 item 16 (and 15): a CA that did not sign the broker's certificate is refused at
    once as "TLS certificate not trusted", not retried as an unreachable broker."""
    port, folder = tls_broker
    for name in ("other-ca.pem", "client.pem", "client.key"):
        shutil.copy(folder / name, tmp_path / name)
    plan = load_graph(_graph(tmp_path, port, "{ca: other-ca.pem, cert: client.pem, "
                                               "key: client.key}"))
    client = redis.Redis.from_url(resolve_broker_urls(plan)["main"], socket_connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(BrokerRefused, match="TLS certificate not trusted"):
        retry(client.ping, "ping the TLS broker")
    assert time.monotonic() - started < 5


def test_item16_certificate_checks_off_only_when_insecure(tmp_path: Path) -> None:
    """Issue 9 item 16: ``?ssl_cert_reqs=none`` is refused unless tls.insecure is true; tls
    on an embedded broker or a redis:// URL is refused with the fix."""
    def load(brokers: str) -> object:
        graph = tmp_path / "g.yaml"
        graph.write_text(f"name: g\nbrokers:\n  main: {brokers}\nagents:\n"
                         "  c: {class: 'procgraph.examples:Counter'}\n")
        return load_graph(graph)

    with pytest.raises(GraphError, match="ssl_cert_reqs=none turns the broker's certificate"):
        load('{url: "rediss://h:6380?ssl_cert_reqs=none"}')
    plan = load('{url: "rediss://h:6380?ssl_cert_reqs=none", tls: {insecure: true}}')
    assert "ssl_cert_reqs=none" in resolve_broker_urls(plan)["main"]  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="bundled Valkey has no TLS"):
        load("{tls: {ca: ca.pem}}")
    with pytest.raises(GraphError, match="tls needs a rediss://"):
        load('{url: "redis://h:6379", tls: {ca: ca.pem}}')
