"""``procgraph info module:Class``: an agent's ports, message types and params."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Annotated, Any

import typer

from procgraph.agent import Agent
from procgraph.cli.common import fail
from procgraph.safetext import printable


def import_agent_class(path: str) -> type[Agent]:
    """Import ``module:Class`` (the current folder on the path, as beside a graph)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise fail(f"{path!r} is not an import path; fix: write it as module:ClassName")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise fail(f"cannot import module {module_name!r}: {printable(exc)}; fix: run from "
                   "the module's folder or set PYTHONPATH") from None
    found = getattr(module, attr, None)
    if not (isinstance(found, type) and issubclass(found, Agent)):
        raise fail(f"{attr!r} in {module_name} is not an Agent subclass")
    return found


def _type_of(prop: dict[str, Any]) -> str:
    if "type" in prop:
        kind = prop["type"]
        return "|".join(kind) if isinstance(kind, list) else str(kind)
    if "anyOf" in prop:
        return "|".join(_type_of(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "enum" in prop:
        return "enum"
    return "any"


def describe_agent(cls: type[Agent]) -> dict[str, Any]:
    """Ports and params of an agent class as plain data (what ``info`` prints)."""
    schema = cls.Params.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        row: dict[str, Any] = {"name": name, "type": _type_of(prop),
                               "required": name in required}
        if "default" in prop:
            row["default"] = prop["default"]
        if "enum" in prop:
            row["choices"] = prop["enum"]
        if prop.get("description"):
            row["doc"] = prop["description"]
        params.append(row)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "doc": (cls.__doc__ or "").strip().split("\n\n")[0],
        "serves": cls.serves,
        "inputs": [{"name": n, "type": p.type.type_label(), "policy": p.policy,
                    "batch": p.batch, "max_wait_ms": p.max_wait_ms, "optional": p.optional,
                    "doc": p.doc} for n, p in cls.inputs.items()],
        "outputs": [{"name": n, "type": p.type.type_label(), "maxlen": p.maxlen,
                     "max_mb": p.max_mb, "encoding": p.encoding, "doc": p.doc}
                    for n, p in cls.outputs.items()],
        "params": params,
    }


def _text(info: dict[str, Any]) -> str:
    lines = [info["class"]]
    if info["doc"]:
        lines.append("  " + " ".join(info["doc"].split()))
    if info["serves"]:
        lines.append(f"  serves: {info['serves']} (listens on params.port)")
    lines.append("inputs:" if info["inputs"] else "inputs: none (a source)")
    for p in info["inputs"]:
        extra = f" batch={p['batch']} max_wait_ms={p['max_wait_ms']:g}" if p["batch"] > 1 else ""
        extra += " optional" if p["optional"] else ""
        doc = f"  - {p['doc']}" if p["doc"] else ""
        lines.append(f"  {p['name']}: {p['type']} policy={p['policy']}{extra}{doc}")
    lines.append("outputs:" if info["outputs"] else "outputs: none (a sink)")
    for p in info["outputs"]:
        enc = f" encoding={json.dumps(p['encoding'])}" if p["encoding"] else ""
        doc = f"  - {p['doc']}" if p["doc"] else ""
        lines.append(f"  {p['name']}: {p['type']} maxlen={p['maxlen']} "
                     f"max_mb={p['max_mb']:g}{enc}{doc}")
    lines.append("params:" if info["params"] else "params: none")
    for p in info["params"]:
        default = (f" = {json.dumps(p['default'])}" if "default" in p
                   else " (required)" if p["required"] else "")
        choices = f" one of {json.dumps(p['choices'])}" if "choices" in p else ""
        doc = f"  - {p['doc']}" if "doc" in p else ""
        lines.append(f"  {p['name']}: {p['type']}{default}{choices}{doc}")
    return "\n".join(printable(line, 2000) for line in lines)


def info(
    path: Annotated[str, typer.Argument(metavar="MODULE:CLASS",
                                        help="agent class, e.g. agents.trigger:Trigger")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print an agent's ports (types, policy, batch), and params from its Params model."""
    data = describe_agent(import_agent_class(path))
    typer.echo(json.dumps(data, indent=1, default=str) if json_out else _text(data))


def register(app: typer.Typer) -> None:
    """Add the command(s) to the CLI."""
    app.command()(info)
