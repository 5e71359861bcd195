"""``procgraph deploy``: manifests valid against the Compose and Kubernetes schemas, and right.

Nothing here needs a container engine or a cluster (there are none on the CI machines): the
Compose file is checked with ``check-jsonschema --builtin-schema vendor.compose-spec``, every
Kubernetes object with ``kubernetes_validate`` in strict mode. The replicas' command lines are
run for real against a local Valkey, laid out as the image lays them out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import redis
import yaml
from typer.testing import CliRunner

from procgraph.brokers import EmbeddedBroker
from procgraph.cli.main import app
from procgraph.deploy import DeployOptions, compose_file, k8s_manifests
from procgraph.graph import load_graph

ROOT = Path(__file__).resolve().parents[2]
GRAPHS = ["inspection", "minimal"]
K8S_VERSIONS = ["1.33.0", "1.28.0"]  # 1.28: first with the pod-index label the pods use
# containers do not share a loopback: deploy sets HMI_HOST / PLC_SIM_HOST=0.0.0.0 and
# PLC_HOST=plc-sim itself; the HMI, listening beyond loopback, then needs its token
CONTAINER_ENV = ["-e", "HMI_TOKEN=${HMI_TOKEN}"]
TOKEN = "k8s-test-token-0123456789"  # what ${HMI_TOKEN} is in the shell of `deploy k8s`
EXAMPLES = {  # example file -> the command line (after `procgraph`) that writes it
    "deploy/compose.inspection.yaml": ["deploy", "compose", "graphs/inspection.yaml",
                                       "--graph-source", "../graphs/inspection.yaml",
                                       *CONTAINER_ENV],
    "deploy/k8s.inspection.yaml": ["deploy", "k8s", "graphs/inspection.yaml",
                                   "--namespace", "inspection", *CONTAINER_ENV],
}
SECRETS_OUT = {  # where the example's secret file goes in the tests (not the repository)
    "deploy/k8s.inspection.yaml": "inspection.secret.yaml",
}
runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process from the repo root; (exit code, stdout, stderr)."""
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        result = runner.invoke(app, list(args), env={"HMI_TOKEN": TOKEN})
    finally:
        os.chdir(cwd)
    return result.exit_code, result.stdout, result.stderr


def options(graph: str, **kw: Any) -> DeployOptions:
    file = ROOT / "graphs" / f"{graph}.yaml"
    return DeployOptions(graph_text=file.read_text(), graph_file=file.name, **kw)


def plan(graph: str, env: dict[str, str] | None = None) -> Any:
    return load_graph(ROOT / "graphs" / f"{graph}.yaml", env=env or {})


def check_compose(path: Path) -> None:
    exe = shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is not installed: pip install -e '.[test]'"
    result = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def k8s_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# -- Compose ---------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", GRAPHS)
def test_compose_valid_and_complete(graph: str, tmp_path: Path) -> None:
    code, out, err = cli("deploy", "compose", f"graphs/{graph}.yaml", *CONTAINER_ENV)
    assert code == 0, err
    path = tmp_path / "compose.yaml"
    path.write_text(out)
    check_compose(path)
    doc = yaml.safe_load(out)
    assert set(doc) == {"services"}  # no top-level name: Compose v1 rejects it
    v1 = shutil.which("docker-compose")
    if v1:  # Debian's docker-compose 1.29 parses it too (`config` needs no engine)
        parsed = subprocess.run([v1, "-f", str(path), "config", "-q"], capture_output=True,
                                text=True, env={**os.environ, "HMI_TOKEN": TOKEN})
        assert parsed.returncode == 0, parsed.stderr
    p = plan(graph)
    services = doc["services"]
    expected = {f"{a.name.replace('_', '-')}-{i}" for a in p.agents.values()
                for i in range(a.replicas)} | {"broker-main"}
    assert set(services) == expected  # one service per replica, one per embedded broker
    assert services["broker-main"]["image"] == "valkey/valkey:8"
    assert services["broker-main"]["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]
    for a in p.agents.values():
        for i in range(a.replicas):
            svc = services[f"{a.name.replace('_', '-')}-{i}"]
            assert svc["command"] == ["agent", f"/app/graphs/{graph}.yaml", a.name, str(i)]
            urls = json.loads(svc["environment"]["PROCGRAPH_BROKERS"])
            assert urls == {"main": "redis://broker-main:6379"}
            assert svc["depends_on"] == {"broker-main": {"condition": "service_healthy"}}
            assert svc["restart"] == "unless-stopped"
            mount = svc["volumes"][0]
            assert mount["read_only"] and mount["target"] == f"/app/graphs/{graph}.yaml"
            assert (ROOT / mount["source"]).resolve() == ROOT / "graphs" / f"{graph}.yaml"


def test_compose_ports_placement_restart_external_broker() -> None:
    p = plan("inspection", {"PROCGRAPH_REDIS": "redis://10.0.0.2:6379"})
    p.agents["plc"].node, p.agents["plc"].restart = "plc-pc", "on-failure"
    p.agents["hmi"].replicas = 2
    doc = compose_file(p, options("inspection", broker_image="redis:7"))
    services = doc["services"]
    assert not any(s.startswith("broker-") for s in services)  # external broker used as is
    assert json.loads(services["plc-0"]["environment"]["PROCGRAPH_BROKERS"]) == {
        "main": "redis://10.0.0.2:6379"}
    assert "depends_on" not in services["plc-0"]
    assert services["plc-0"]["labels"]["procgraph.io/node"] == "plc-pc"
    assert services["plc-0"]["restart"] == "on-failure"
    assert services["hmi-0"]["ports"] == ["8080:8080"]
    assert services["hmi-1"]["ports"] == ["8081:8080"]
    assert services["plc-sim-0"]["expose"] == ["5020"]  # reachable by the plc, not published
    assert "ports" not in services["plc-0"]  # plc's params.port is the PLC's, not its own


# -- Kubernetes ------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", GRAPHS)
def test_k8s_valid_and_complete(graph: str, tmp_path: Path) -> None:
    code, out, err = cli("deploy", "k8s", f"graphs/{graph}.yaml", "--namespace", "line",
                         *CONTAINER_ENV, "--secrets-out", str(tmp_path / "s.yaml"))
    assert code == 0, err
    (tmp_path / "k8s.yaml").write_text(out)
    exe = shutil.which("kubernetes-validate")
    assert exe, "kubernetes-validate is not installed: pip install -e '.[test]'"
    for version in K8S_VERSIONS:  # the command line, as a user runs it
        files = [str(tmp_path / "k8s.yaml"), *([str(tmp_path / "s.yaml")]
                                              if graph == "inspection" else [])]
        checked = subprocess.run([exe, "--strict", "-k", version, *files],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "passed" in checked.stdout + checked.stderr
    docs = k8s_docs(out)
    for doc in docs:  # Kubernetes never expands ${VAR}: none outside the graph's text
        if doc["kind"] != "ConfigMap":
            assert "${" not in json.dumps(doc), doc["metadata"]["name"]
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "line"
    by_kind: dict[tuple[str, str], dict[str, Any]] = {
        (d["kind"], d["metadata"]["name"]): d for d in docs}
    text = (ROOT / "graphs" / f"{graph}.yaml").read_text()
    assert by_kind[("ConfigMap", f"{graph}-graph")]["data"] == {f"{graph}.yaml": text}
    assert ("Deployment", "broker-main") in by_kind and ("Service", "broker-main") in by_kind
    p = plan(graph)
    for a in p.agents.values():
        sts = by_kind[("StatefulSet", a.name.replace("_", "-"))]
        assert sts["spec"]["replicas"] == a.replicas
        pod = sts["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["args"] == ["agent", f"/app/graphs/{graph}.yaml", a.name, "$(PROCGRAPH_REPLICA)"]
        env = {e["name"]: e for e in c["env"]}
        assert json.loads(env["PROCGRAPH_BROKERS"]["value"]) == {
            "main": "redis://broker-main:6379"}
        assert "pod-index" in env["PROCGRAPH_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["runAsNonRoot"] is True
        assert set(c["resources"]) == {"requests", "limits"}
        check = (f'exec procgraph check /app/graphs/{graph}.yaml --agent {a.name} '
                 '--replica "$PROCGRAPH_REPLICA"')
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["exec"]["command"] == ["sh", "-c", check]
        # the graph alone (subPath): the image's /app/graphs keeps the user's modules
        assert c["volumeMounts"] == [{"name": "graph", "mountPath": f"/app/graphs/{graph}.yaml",
                                      "subPath": f"{graph}.yaml", "readOnly": True}]


def test_k8s_node_affinity_ports_and_external_broker() -> None:
    p = plan("inspection", {"PROCGRAPH_REDIS": "redis://redis.infra:6379"})
    p.agents["front_cam"].node = "cam-pc"
    docs = k8s_manifests(p, options("inspection", node_label="procgraph.io/node",
                                    service_type="NodePort"))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert not any(kind == "Deployment" for kind, _ in by_kind)  # no broker to run
    assert "Namespace" not in {kind for kind, _ in by_kind}
    pod = by_kind[("StatefulSet", "front-cam")]["spec"]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "procgraph.io/node", "operator": "In", "values": ["cam-pc"]}]
    assert "affinity" not in by_kind[("StatefulSet", "back-cam")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env["PROCGRAPH_BROKERS"]) == {"main": "redis://redis.infra:6379"}
    public = by_kind[("Service", "hmi-public")]["spec"]
    assert public["type"] == "NodePort" and public["ports"][0]["port"] == 8080
    assert by_kind[("Service", "plc-sim")]["spec"]["ports"][0]["port"] == 5020
    assert ("Service", "plc-public") not in by_kind


def test_strict_validation_catches_a_misspelled_field() -> None:
    """The schema check is not a no-op: a typo in a generated object is an error."""
    doc = k8s_manifests(plan("minimal"), options("minimal"))[-1]
    doc["spec"]["replica"] = doc["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


# -- examples, errors, Dockerfile ------------------------------------------------------------
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_examples_are_up_to_date(example: str, tmp_path: Path) -> None:
    extra = ["--secrets-out", str(tmp_path / SECRETS_OUT[example])] \
        if example in SECRETS_OUT else []
    code, out, err = cli(*EXAMPLES[example], *extra)
    assert code == 0, err
    assert (ROOT / example).read_text() == out, (
        f"{example} is stale: run  procgraph {' '.join(EXAMPLES[example])} --out {example}")


@pytest.mark.parametrize("kind", ["compose", "k8s"])
def test_bad_graph_exits_1_without_traceback(kind: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nagents:\n  a: {class: procgraph.examples:Counter, replica: 2}\n")
    code, out, err = cli("deploy", kind, str(bad))
    assert code == 1 and out == ""
    assert "replica" in err and "Traceback" not in err
    code, _, err = cli("deploy", kind, "graphs/minimal.yaml", "--env", "NOEQUALS")
    assert code == 1 and "NAME=VALUE" in err


def test_env_option_expands_the_graph_and_reaches_containers() -> None:
    code, out, err = cli("deploy", "compose", "graphs/inspection.yaml", *CONTAINER_ENV,
                         "-e", "PROCGRAPH_REDIS=redis://10.1.1.1:6379", "-e", "HMI_PORT=9000")
    assert code == 0, err
    services = yaml.safe_load(out)["services"]
    assert services["hmi-0"]["ports"] == ["9000:9000"]
    assert services["hmi-0"]["environment"]["HMI_PORT"] == "9000"  # same expansion inside
    assert "broker-main" not in services


def test_servers_bind_all_interfaces_and_warnings_reach_the_terminal(tmp_path: Path) -> None:
    """Deploy sets the graph's host variables for containers, says so, and warns on stderr."""
    code, out, err = cli("deploy", "compose", "graphs/inspection.yaml", *CONTAINER_ENV)
    assert code == 0, err
    env = yaml.safe_load(out)["services"]["hmi-0"]["environment"]
    assert (env["HMI_HOST"], env["PLC_SIM_HOST"], env["PLC_HOST"]) == (
        "0.0.0.0", "0.0.0.0", "plc-sim")
    assert "note: agent plc: PLC_HOST=plc-sim (it dials agent plc_sim on port 5020)" in err
    graph = tmp_path / "g.yaml"  # a literal loopback host: deploy cannot change it, it warns
    graph.write_text((ROOT / "graphs" / "inspection.yaml").read_text().replace(
        "${PLC_SIM_HOST:-127.0.0.1}", "127.0.0.1").replace("../models/", str(ROOT / "models/")))
    code, out, err = cli("deploy", "compose", str(graph), *CONTAINER_ENV)
    assert code == 0, err
    assert "warning: agent plc_sim: params.host is 127.0.0.1" in err
    assert "warning: agent plc_sim: params.host is 127.0.0.1" in out  # and in the header
    code, _, err = cli("deploy", "compose", "graphs/inspection.yaml")  # no token for the HMI
    assert code == 1 and err.count("error:") == 1 and "HMI_HOST=0.0.0.0" in err


def test_k8s_shell_reference_without_a_value_is_one_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["deploy", "k8s", str(ROOT / "graphs" / "minimal.yaml"),
                                 "-e", "API_TOKEN=${API_TOKEN}", "-o", str(tmp_path / "k.yaml")],
                           env={"API_TOKEN": None})
    assert result.exit_code == 1 and result.stderr.count("error:") == 1
    assert "Kubernetes does not expand ${API_TOKEN}" in result.stderr
    assert "export API_TOKEN=VALUE" in result.stderr


def test_dockerfile_lint() -> None:
    """The image was not built here (no engine): check its shape and its COPY sources."""
    lines = [ln.strip() for ln in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    keywords = [ln.split()[0].upper() for ln in instructions
                if re.match(r"^[A-Za-z]+\s", ln) and not ln.startswith(("set ", "wheel="))]
    assert keywords[0] in ("FROM", "ARG")
    assert keywords[keywords.index("FROM")] == "FROM"
    final = keywords[len(keywords) - keywords[::-1].index("FROM") - 1:]
    assert "ENTRYPOINT" in final
    assert any(ln.startswith("ENTRYPOINT") and '"procgraph"' in ln for ln in instructions)
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit()  # numeric: Kubernetes runAsNonRoot can check it
    assert "python:3.11-slim" in "\n".join(instructions)
    ignored = {ln for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln and not ln.startswith("#")}
    for ln in instructions:
        if ln.startswith("COPY ") and "--from" not in ln:
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
                assert src not in ignored, f"COPY {src}: excluded by .dockerignore"


# -- the replicas' command lines, run for real -----------------------------------------------
def test_compose_commands_run_the_minimal_graph(tmp_path: Path) -> None:
    """Run every replica exactly as its Compose service says, against a real Valkey."""
    app_dir = tmp_path / "app"
    (app_dir / "graphs").mkdir(parents=True)
    shutil.copy(ROOT / "graphs" / "minimal.yaml", app_dir / "graphs" / "minimal.yaml")
    doc = compose_file(plan("minimal"), options("minimal"))
    procs: list[subprocess.Popen[bytes]] = []
    with EmbeddedBroker() as broker:
        try:
            for name, svc in doc["services"].items():
                if name.startswith("broker-"):
                    continue
                env = {**os.environ, **svc["environment"],
                       "PROCGRAPH_BROKERS": json.dumps({"main": broker.url})}
                env.pop("PROCGRAPH_REDIS", None)
                args = [a.replace("/app/", f"{app_dir}/") for a in svc["command"]]
                procs.append(subprocess.Popen([sys.executable, "-m", "procgraph", *args],
                                              env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.STDOUT))
            r = redis.Redis.from_url(broker.url)
            deadline = time.monotonic() + 20
            done = False
            while time.monotonic() < deadline and not done:
                time.sleep(0.3)
                keys = {k.decode() for k in r.keys("pg:minimal:hb:*")}
                groups = r.xinfo_groups("pg:minimal:scale:scaled") \
                    if r.exists("pg:minimal:scale:scaled") else []
                done = keys >= {"pg:minimal:hb:counter:0", "pg:minimal:hb:scale:0",
                                "pg:minimal:hb:scale:1", "pg:minimal:hb:printer:0"} and any(
                    g["name"] == b"printer" and g["entries-read"] for g in groups)
            assert done, "the replicas did not all run and pass messages along"
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=15)
