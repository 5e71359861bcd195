"""deploy/grafana/procgraph-dashboard.json queries exactly the names procgraph.metrics exports,
and every query is valid PromQL (Debian's promtool parses them as recording rules)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from procgraph.metrics import FAMILIES, METRIC_NAMES

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "procgraph-dashboard.json"
NAME = re.compile(r"\bprocgraph_[A-Za-z0-9_]+")


def queries() -> list[str]:
    """Every PromQL text of the dashboard: panel targets and template variables."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var.get("type") == "query":
            out.append(var["definition"])
    return out


def test_the_dashboard_uses_only_exported_names_and_every_family() -> None:
    used = {n for q in queries() for n in NAME.findall(q)}
    assert used, "no procgraph metric in the dashboard"
    assert used <= METRIC_NAMES, f"not exported: {sorted(used - METRIC_NAMES)}"
    unused = {f for f in FAMILIES if not any(n.startswith(f) for n in used)}
    assert not unused, f"exported but not on the dashboard: {sorted(unused)}"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    exprs = [q.replace("$__rate_interval", "1m").replace("$graph", ".*")
             for q in queries() if not q.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"procgraph:dashboard:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout + done.stderr
