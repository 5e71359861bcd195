"""``procgraph deploy -e PROCGRAPH_REDIS=redis://:PASSWORD@...`` (issue 9 item 14): the password
goes to one env file / Secret, mode 0600, that the services refer to; never inline."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import kubernetes_validate
import yaml
from typer.testing import CliRunner

from procgraph.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "item14-deploy-S3cret"
URL = f"redis://:{PASSWORD}@10.0.0.2:6379"
runner = CliRunner()


def _deploy(kind: str, out: Path) -> str:
    result = runner.invoke(app, ["deploy", kind, str(ROOT / "graphs" / "inspection.yaml"),
                                 "-e", f"PROCGRAPH_REDIS={URL}", "-e", "HMI_PORT=9000",
                                 "-e", "HMI_TOKEN=${HMI_TOKEN}", "--out", str(out)],
                           env={"HMI_TOKEN": "item14-hmi-token-0123456789"})
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    return out.read_text()


def test_item14_deploy_compose_keeps_the_password_in_an_env_file(tmp_path: Path) -> None:
    """Issue 9 item 14: `deploy compose -e PROCGRAPH_REDIS=...` (it wrote the password 9 times
    in plain text): the Compose file names an env file, mode 0600, that alone holds it."""
    text = _deploy("compose", tmp_path / "compose.yaml")
    assert PASSWORD not in text
    assert "--env=PROCGRAPH_REDIS=***" in text  # the header's command line, masked
    secrets = tmp_path / "compose.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"PROCGRAPH_REDIS='{URL}'" in secrets.read_text().splitlines()
    services = yaml.safe_load(text)["services"]
    agents = [svc for name, svc in services.items() if not name.startswith("broker-")]
    assert agents and all(svc["env_file"] == ["./compose.env"] for svc in agents)
    assert all("PROCGRAPH_REDIS" not in svc["environment"] for svc in agents)
    assert services["hmi-0"]["environment"]["HMI_PORT"] == "9000"  # not a secret: inline
    exe = shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is not installed: pip install -e '.[test]'"
    checked = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec",
                              str(tmp_path / "compose.yaml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_item14_deploy_k8s_keeps_the_password_in_a_secret(tmp_path: Path) -> None:
    """Issue 9 item 14: `deploy k8s -e PROCGRAPH_REDIS=...`: the manifests refer to a Secret
    (envFrom) written apart, mode 0600; nothing inline."""
    text = _deploy("k8s", tmp_path / "k8s.yaml")
    assert PASSWORD not in text
    secret_file = tmp_path / "k8s.secret.yaml"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    (secret,) = [d for d in yaml.safe_load_all(secret_file.read_text()) if d]
    assert secret["kind"] == "Secret" and secret["stringData"]["PROCGRAPH_REDIS"] == URL
    kubernetes_validate.validate(secret, "1.33.0", strict=True)
    docs = [d for d in yaml.safe_load_all(text) if d]
    sets = [d for d in docs if d["kind"] == "StatefulSet"]
    assert sets
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    for sts in sets:
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        assert "PROCGRAPH_REDIS" not in {e["name"] for e in container["env"]}
