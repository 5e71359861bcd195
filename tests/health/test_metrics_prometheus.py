"""Debian's real Prometheus server scrapes a running line's endpoint; `up` and a counter are
then read back through Prometheus' HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgtest_util import wait_for
from procgraph.brokers import EmbeddedBroker
from procgraph.supervisor import Supervisor

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
COUNT = 40
LINE = f"""
name: scraped
agents:
  numbers: {{class: pgtest_agents:Numbers, params: {{count: {COUNT}, rate_hz: 0}}}}
  sink:
    class: pgtest_agents:Recorder
    inputs: {{items: numbers.out}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(api: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query (empty while nothing is scraped yet)."""
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_a_running_line(
        valkey: EmbeddedBroker, run_graph: Callable[..., object], tmp_path: Path) -> None:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    with run_graph(LINE, redis_url=valkey.url) as sup:  # type: ignore[attr-defined]
        assert isinstance(sup, Supervisor) and sup.metrics is not None
        target = f"127.0.0.1:{sup.metrics.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: procgraph\n    static_configs: [{{targets: ['{target}']}}]\n")
        listen = f"127.0.0.1:{free_port()}"
        api = f"http://{listen}"
        log = (tmp_path / "prometheus.log").open("wb")
        server = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={listen}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            def ready() -> bool:
                try:
                    with urllib.request.urlopen(f"{api}/-/ready", timeout=1) as reply:
                        return bool(reply.status == 200)
                except OSError:
                    return False

            wait_for(ready, 20, "prometheus to be ready")
            up = wait_for(lambda: query(api, 'up{job="procgraph"}'), 20, "a first scrape")
            assert up[0]["value"][1] == "1", up
            sent = wait_for(lambda: [r for r in query(
                api, 'procgraph_messages_out_total{graph="scraped",agent="numbers"}')
                if r["value"][1] == str(COUNT)], 20, "the counter to reach Prometheus")
            print(sent)
            assert sent[0]["metric"]["port"] == "out" and sent[0]["metric"]["replica"] == "0"
            replicas_up = query(api, 'sum(procgraph_up{graph="scraped"})')
            assert replicas_up[0]["value"][1] == "2", replicas_up
        finally:
            server.terminate()
            server.wait(10)
            log.close()
            print((tmp_path / "prometheus.log").read_text()[-2000:])
