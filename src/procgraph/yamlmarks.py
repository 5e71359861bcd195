"""Safe YAML loading that remembers the line of every value and expands ${VAR}."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from procgraph.errors import GraphError

Path_ = tuple[str | int, ...]
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class Marked:
    """A loaded YAML document plus the line of each value, keyed by its path."""

    def __init__(self, file: Path, data: Any, lines: dict[Path_, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def where(self, path: Path_) -> str:
        """``file:line`` for a path, for error messages."""
        line = self.line_of(path)
        return f"{self.file}:{line}" if line else str(self.file)

    def error(self, path: Path_, problem: str, fix: str = "") -> GraphError:
        """A GraphError naming file, line, the offending key path and the fix."""
        dotted = ".".join(str(p) for p in path)
        text = f"{self.where(path)}: {dotted + ': ' if dotted else ''}{problem}"
        if fix:
            text += f"\n  fix: {fix}"
        return GraphError(text)


def interpolate(text: str, env: Mapping[str, str], where: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from ``env``."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                msg = (
                    f"{where}: environment variable {name} is not set"
                    f"\n  fix: export {name}=... or write ${{{name}:-default}} in the graph"
                )
                raise GraphError(msg)
            return default
        return value

    return _VAR.sub(sub, text)


def load_marked(file: Path, env: Mapping[str, str] | None = None) -> Marked:
    """Load a YAML file safely; expand variables in strings; keep line numbers."""
    env = os.environ if env is None else env
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError(f"{file}: cannot read the graph file: {exc.strerror}") from exc
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise GraphError(f"{file}{line}: not valid YAML: {problem}"
                         "\n  fix: check the indentation, colons, quotes and brackets there"
                         ) from exc
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}

    def convert(node: yaml.Node, path: Path_) -> Any:
        lines[path] = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
            raise GraphError(f"{file}:{node.start_mark.line + 1}: unsupported tag {node.tag!r}"
                             "\n  fix: remove the tag; a graph is plain YAML")
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            merged: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" merge keys
                    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) \
                        else [value_node]
                    for src in sources:
                        value = convert(src, path)
                        if not isinstance(value, dict):
                            raise GraphError(f"{file}:{src.start_mark.line + 1}: '<<' merges "
                                             "a mapping only\n  fix: use <<: *anchor")
                        merged = {**value, **merged}
                    continue
                key = convert_scalar(key_node, path)
                if key in out:
                    raise GraphError(
                        f"{file}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
                        "\n  fix: each key may appear once; merge or rename the entries"
                    )
                out[key] = convert(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1
            return {**merged, **out}
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, (*path, i)) for i, item in enumerate(node.value)]
        return convert_scalar(node, path)

    def convert_scalar(node: yaml.Node, path: Path_) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise GraphError(f"{file}:{node.start_mark.line + 1}: keys must be plain scalars"
                             "\n  fix: use a name as the key, not a list or mapping")
        try:
            value = yaml.SafeLoader("").construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError) as exc:  # "!!int abc"
            raise GraphError(f"{file}:{node.start_mark.line + 1}: cannot read this value: "
                             f"{getattr(exc, 'problem', exc)}"
                             "\n  fix: remove the tag or quote the value") from exc
        if isinstance(value, str) and "${" in value:
            raw = interpolate(value, env, f"{file}:{node.start_mark.line + 1}")
            if node.style is None:  # plain scalar: re-resolve (numbers, booleans)
                try:
                    resolved = yaml.safe_load(raw) if raw.strip() else raw
                except yaml.YAMLError:
                    return raw
                # only scalars: a variable must not inject a mapping or a list, nor lose a '#...'
                return resolved if isinstance(resolved, int | float | bool) else raw
            return raw
        return value

    data = convert(root, ()) if root is not None else None
    return Marked(file, data, lines)
