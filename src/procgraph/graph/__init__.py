"""The process graph: loading a YAML file, validating it and compiling it into a plan.

The schema of the file is in :mod:`procgraph.graph.spec`, the compiled plan in
:mod:`procgraph.graph.plan`; both are re-exported here.
"""

from __future__ import annotations

import difflib
import re
import shlex
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from procgraph.agent import Agent
from procgraph.codec import ENCODINGS
from procgraph.constants import EMBEDDED, stream_key
from procgraph.errors import GraphError
from procgraph.graph.imports import (
    ImportTimeout,
    add_graph_dir,
    import_module,
    import_timeout_s,
    shadowed_modules,
)
from procgraph.graph.plan import AgentPlan, GraphPlan, InputPlan, OutputPlan
from procgraph.graph.spec import (
    AgentSpec,
    BrokerSpec,
    EdgeSpec,
    GraphSpec,
    OutputSpec,
    PersistenceSpec,
)
from procgraph.safetext import printable
from procgraph.yamlmarks import Marked, Path_, load_marked

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

__all__ = [
    "EMBEDDED", "AgentPlan", "AgentSpec", "BrokerSpec", "EdgeSpec", "GraphPlan", "GraphSpec",
    "InputPlan", "OutputPlan", "OutputSpec", "PersistenceSpec", "agent_class",
    "graph_json_schema", "import_agent", "load_graph",
]


def import_agent(path: str, where: Marked, at: Path_) -> type[Agent]:
    """Import ``module:Class`` and check it is an Agent subclass.

    A module that fails to import in any way (an exception, ``sys.exit()``, or no end
    within :func:`~procgraph.graph.imports.import_timeout_s` seconds) raises GraphError
    naming the module; only Ctrl-C (KeyboardInterrupt) goes through.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise where.error(at, f"{path!r} is not an import path", "write it as module:ClassName")
    folder = shlex.quote(str(Path(where.file).resolve().parent))
    see = f"run  cd {folder} && python -c 'import {module_name}'  to see what it does"
    try:
        module = import_module(module_name, import_timeout_s())
    except ImportTimeout as exc:
        raise where.error(at, f"importing {module_name!r} did not finish within "
                          f"{exc.timeout_s:g} s (it was at {exc.at})",
                          f"make the module import quickly (connect, load and wait in the "
                          f"agent's setup, not at import); {see}") from None
    except ImportError as exc:
        raise where.error(
            at,
            f"cannot import module {module_name!r}: {printable(exc)}",
            "put the module beside the graph file or on PYTHONPATH, or fix the name",
        ) from exc
    except SystemExit as exc:
        raise where.error(at, f"importing {module_name!r} called sys.exit({exc.code!r})",
                          f"a module must not exit when imported; {see}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise where.error(at, f"importing {module_name!r} failed: {printable(repr(exc))}",
                          f"{see} and its traceback") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        names = sorted(n for n, v in vars(module).items() if isinstance(v, type)
                       and issubclass(v, Agent) and v is not Agent)
        raise where.error(at, f"module {module_name!r} has no {attr!r}",
                          f"agents defined there: {', '.join(names) or 'none'}")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise where.error(at, f"{path} is not a procgraph.Agent subclass",
                          "name a class that subclasses procgraph.Agent")
    return cls


def agent_class(plan: GraphPlan, agent: str) -> type[Agent]:
    """The Agent class that agent ``agent`` of a validated graph names, imported as
    :func:`load_graph` does (modules beside the graph file are importable)."""
    add_graph_dir(plan.graph_dir)
    where = Marked(Path(plan.file), None, {})
    return import_agent(plan.agents[agent].class_path, where, ("agents", agent, "class"))


def _children(tp: Any, part: str | int) -> list[Any]:
    """The annotations one step below ``tp`` at key or index ``part``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(tp) for c in _children(arg, part)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.annotation for n, f in tp.model_fields.items() if part in (n, f.alias)]
    if origin is dict:
        return [typing.get_args(tp)[1]]
    if origin is list and isinstance(part, int):
        return [typing.get_args(tp)[0]]
    return []


def _keys_at(model: type[BaseModel], loc: Path_) -> list[str]:
    """The keys allowed beside ``loc[-1]``, for did-you-mean hints."""
    level: list[Any] = [model]
    for part in loc[:-1]:
        level = [c for tp in level for c in _children(tp, part)]
    flat = [a for tp in level for a in (typing.get_args(tp) if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else (tp,))]
    return sorted({f.alias or n for tp in flat if isinstance(tp, type) and issubclass(tp, BaseModel)
                   for n, f in tp.model_fields.items()})


def _pydantic_error(marked: Marked, exc: ValidationError, prefix: Path_, what: str,
                    model: type[BaseModel]) -> GraphError:
    lines = []
    fixes: list[tuple[int, str]] = []  # (priority, fix): an unknown key explains most
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("str", "EdgeSpec",
                    "list[union[str,EdgeSpec]]")))
        path = (*prefix, *loc)
        dotted = ".".join(str(p) for p in path)
        hint = ""
        if err["type"] == "extra_forbidden":
            hint = " (unknown key: check the spelling)"
            close = difflib.get_close_matches(str(path[-1]), _keys_at(model, loc), n=1)
            fixes.append((0, f"did you mean {close[0]!r}?" if close else
                          f"remove {str(path[-1])!r} or correct its spelling"))
        elif err["type"] == "missing":
            hint = " (required)"
            fixes.append((1, f"add {str(path[-1])!r} to "
                              f"{'.'.join(map(str, path[:-1])) or 'the top level'}"))
        elif marked.source_of(path) is not None:  # the bad value came from a ${VAR}
            fixes.append((2, f"correct {marked.source_of(path)} ({dotted}: {err['msg']})"))
            lines.append(f"{dotted}: {marked.describe(path, err.get('input'))}: {err['msg']}")
            continue
        else:
            fixes.append((2, f"change {dotted}: {err['msg']}"))
        lines.append(f"{marked.where(path)}: {dotted}: {err['msg']}{hint}")
    text = f"{what}\n  " + "\n  ".join(lines[:8])
    if fixes:
        text += f"\n  fix: {min(fixes)[1]}"
    return GraphError(text)


def _edges(value: str | EdgeSpec | list[str | EdgeSpec]) -> list[EdgeSpec]:
    items = value if isinstance(value, list) else [value]
    return [EdgeSpec(**{"from": i}) if isinstance(i, str) else i for i in items]


def load_graph(file: str | Path, env: dict[str, str] | None = None,
               warn: Callable[[str], None] | None = None) -> GraphPlan:
    """Load, validate and compile a graph file; raise GraphError saying what to fix.

    The graph's folder is appended to ``sys.path`` (installed modules win over files beside
    the graph); ``warn`` gets one line per module there that an installed one hides (by
    default a warning of the ``procgraph.graph`` logger).
    """
    path = Path(file)
    marked = load_marked(path, env)
    if not isinstance(marked.data, dict):
        raise GraphError(f"{path}: a graph is a mapping with name, brokers and agents")
    try:
        spec = GraphSpec.model_validate(marked.data)
    except ValidationError as exc:
        raise _pydantic_error(marked, exc, (), f"{path}: the graph is not valid",
                              GraphSpec) from exc
    if not _NAME.match(spec.name):
        raise marked.error(("name",), f"{spec.name!r} is not a valid name",
                           "use letters, digits, '-' and '_' (it is part of stream keys)")
    add_graph_dir(path.resolve().parent, warn=warn)

    classes: dict[str, type[Agent]] = {}
    for name, a in spec.agents.items():
        if not _NAME.match(name):
            raise marked.error(("agents", name), f"agent name {name!r} is not valid",
                               "use letters, digits, '-' and '_'")
        classes[name] = import_agent(a.class_, marked, ("agents", name, "class"))
        for key in ("broker",):
            b = getattr(a, key)
            if b is not None and b not in spec.brokers:
                raise marked.error(("agents", name, key), f"unknown broker {b!r}",
                                   f"brokers defined: {', '.join(spec.brokers)}")
    default_broker = next(iter(spec.brokers), None)
    if default_broker is None:
        raise marked.error(("brokers",), "no broker defined", "add  brokers: {main: {}}")

    # params and output overrides
    params: dict[str, dict[str, Any]] = {}
    for name, a in spec.agents.items():
        cls = classes[name]
        try:
            params[name] = cls.Params.model_validate(
                a.params, context={"graph_dir": path.resolve().parent}).model_dump(mode="json")
        except ValidationError as exc:
            raise _pydantic_error(marked, exc, ("agents", name, "params"),
                                  f"{path}: params of agent {name!r} ({a.class_}) are not valid",
                                  cls.Params) from exc
        for port, over in a.outputs.items():
            if port not in cls.outputs:
                raise marked.error(("agents", name, "outputs", port),
                                   f"{a.class_} has no output {port!r}",
                                   f"outputs: {', '.join(cls.outputs) or 'none'}")
            arrays = cls.outputs[port].type.array_fields
            for field in over.encoding or {}:
                if field not in arrays:
                    raise marked.error(("agents", name, "outputs", port, "encoding", field),
                                       f"{cls.outputs[port].type.__name__} has no array field "
                                       f"{field!r}",
                                       f"array fields: {', '.join(sorted(arrays)) or 'none'}")

    def out_plan(agent: str, port: str) -> OutputPlan:
        a, cls = spec.agents[agent], classes[agent]
        decl = cls.outputs[port]
        over = a.outputs.get(port, OutputSpec())
        broker = over.broker or a.broker or default_broker
        if broker not in spec.brokers:
            raise marked.error(("agents", agent, "outputs", port, "broker"),
                               f"unknown broker {broker!r}",
                               f"brokers defined: {', '.join(spec.brokers)}")
        return OutputPlan(
            port=port, stream=over.stream or stream_key(spec.name, agent, port), broker=broker,
            maxlen=over.maxlen or decl.maxlen,
            max_bytes=int((over.max_mb or decl.max_mb) * 2**20),
            encoding=dict(over.encoding or decl.encoding), quality=over.quality or decl.quality,
            lossless_groups=[], readers=[],
            shm=spec.shm if over.shm is None else over.shm, shm_mb=over.shm_mb or 64.0,
        )

    outputs = {(n, p): out_plan(n, p) for n, cls in classes.items() for p in cls.outputs}
    plans: dict[str, AgentPlan] = {}
    for name, a in spec.agents.items():
        cls = classes[name]
        inputs: list[InputPlan] = []
        read_by: dict[str, str] = {}  # stream -> port: one consumer group per agent and stream
        for port, value in a.inputs.items():
            at = ("agents", name, "inputs", port)
            if port not in cls.inputs:
                raise marked.error(at, f"{a.class_} has no input {port!r}",
                                   f"inputs: {', '.join(cls.inputs) or 'none (it is a source)'}")
            decl = cls.inputs[port]
            for edge in _edges(value):
                src_agent, dot, src_port = edge.from_.partition(".")
                if not dot or src_agent not in spec.agents:
                    raise marked.error(at, f"{edge.from_!r} does not name an agent's output",
                                       f"write agent.port; agents: {', '.join(spec.agents)}")
                src_cls = classes[src_agent]
                if src_port not in src_cls.outputs:
                    raise marked.error(at, f"agent {src_agent!r} has no output {src_port!r}",
                                       f"outputs of {src_agent}: "
                                       f"{', '.join(src_cls.outputs) or 'none'}")
                out_type = src_cls.outputs[src_port].type
                if not issubclass(out_type, decl.type):
                    raise marked.error(
                        at, f"type mismatch: {src_agent}.{src_port} sends "
                        f"{out_type.type_label()} but {name}.{port} expects "
                        f"{decl.type.type_label()}",
                        "wire an output of that type (or a subclass) to this input")
                if edge.batch is not None and edge.batch > 1 and decl.batch == 1:
                    raise marked.error(at, f"{name}.{port} is not a batched input",
                                       "remove batch: the agent's handler takes one message")
                out = outputs[(src_agent, src_port)]
                if out.stream in read_by:
                    raise marked.error(at, f"{name} already reads {edge.from_} (input "
                                       f"{read_by[out.stream]!r}); an agent reads a stream once",
                                       "wire it to one input and fan out inside the handler")
                read_by[out.stream] = port
                policy = edge.policy or decl.policy
                if name not in out.readers:
                    out.readers.append(name)
                if policy == "lossless" and name not in out.lossless_groups:
                    out.lossless_groups.append(name)
                inputs.append(InputPlan(port=port, stream=out.stream, broker=out.broker,
                                        source=edge.from_, policy=policy, start=edge.start,
                                        batch=edge.batch or decl.batch,
                                        max_wait_ms=decl.max_wait_ms if edge.max_wait_ms is None
                                        else edge.max_wait_ms))
        for port, decl in cls.inputs.items():
            if port not in a.inputs and not decl.optional:
                raise marked.error(("agents", name), f"input {port!r} of {name} is not wired",
                                   f"add  inputs: {{{port}: <agent>.<output>}}  to agent {name}")
        plans[name] = AgentPlan(
            name=name, class_path=a.class_, params=params[name], replicas=a.replicas,
            node=a.node, broker=a.broker or default_broker, restart=a.restart,
            max_deliveries=a.max_deliveries, claim_idle_ms=a.claim_idle_ms,
            heartbeat_timeout_s=a.heartbeat_timeout_s, log_level=a.log_level, inputs=inputs,
            runtime=a.runtime, image=a.image, devices=list(a.devices), network=a.network,
            resources=a.resources,
            outputs=[outputs[(name, p)] for p in cls.outputs],
        )
    return GraphPlan(name=spec.name, file=str(path), brokers=spec.brokers, agents=plans,
                     metrics=spec.metrics, logs=spec.logs)


def graph_json_schema() -> dict[str, Any]:
    """JSON Schema of the graph YAML (for editors and CI)."""
    return GraphSpec.model_json_schema(by_alias=True)


__all__ = ["EMBEDDED", "ENCODINGS", "GraphPlan", "GraphSpec", "agent_class", "graph_json_schema",
           "load_graph", "shadowed_modules"]
