"""Safe YAML loading that remembers the line of every value and expands ${VAR}.

A graph file is read within bounds, whatever it holds: at most :data:`MAX_FILE_BYTES`
bytes of strict UTF-8 text, lists and mappings nested at most :data:`MAX_DEPTH` deep,
at most :data:`MAX_NODES` values, and aliases (``*name``, ``<<: *name``) adding at most
:data:`MAX_ALIAS_NODES` values in all (so a "billion laughs" document is refused at the
alias that crosses the limit). Every
refusal is a :class:`~procgraph.errors.GraphError` naming the file, the line and the limit.
"""

from __future__ import annotations

import codecs
import importlib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from procgraph.errors import GraphError
from procgraph.safetext import printable

Path_ = tuple[str | int, ...]
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOP = re.compile(r"[}\n]")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

#: the largest graph file read, in bytes (1 MiB: a graph is wiring, not data)
MAX_FILE_BYTES = 2**20
#: the deepest nesting of lists and mappings, aliases expanded (the top level is depth 1)
MAX_DEPTH = 32
#: the most values that aliases may add to a document, all its aliases together
MAX_ALIAS_NODES = 10_000
#: the most values (scalars, lists and mappings, aliases expanded) in one graph file
MAX_NODES = 100_000

_CParser: Any  # libyaml's parser when PyYAML was built with it: the same events, faster
try:
    _CParser = importlib.import_module("yaml._yaml").CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _CParser = None


class Marked:
    """A loaded YAML document plus the line of each value, keyed by its path, and for each
    value that ``${VAR}`` expansion made, the variables it came from (:meth:`source_of`)."""

    def __init__(self, file: Path, data: Any, lines: dict[Path_, int],
                 sources: dict[Path_, list[tuple[str, str | None]]] | None = None) -> None:
        self.file = file
        self.data = data
        self.lines = lines
        #: path -> the variables expanded in its value: (name, value; None: its default)
        self.sources = sources if sources is not None else {}

    def source_of(self, path: Path_) -> str | None:
        """``$HMI_PORT`` (or ``$HOST and $PORT``, ``the default of ${PORT:-...}``) when the
        value at ``path`` came from environment variables; None when written in the file."""
        used = self.sources.get(tuple(path))
        if not used:
            return None
        names = [f"${name}" if value is not None else f"the default of ${{{name}:-...}}"
                 for name, value in dict.fromkeys(used)]
        return " and ".join(names)

    def describe(self, path: Path_, value: Any) -> str:
        """``'80x' from $HMI_PORT in graphs/x.yaml line 12`` for a value from a variable
        (the value escaped and capped); ``""`` for a value written in the file."""
        source = self.source_of(path)
        if source is None:
            return ""
        line = self.line_of(path)
        shown = printable(repr(value), limit=200)
        return f"{shown} from {source} in {self.file}" + (f" line {line}" if line else "")

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
        source = self.source_of(path)
        if source is not None:  # the value came from the environment: say from where
            shown = printable(repr(self._value_at(path)), limit=200)
            text = f"{self.where(path)}: {dotted}: {shown} from {source}: {problem}"
        if fix:
            text += f"\n  fix: {fix}"
        return GraphError(text)

    def _value_at(self, path: Path_) -> Any:
        """The loaded value at ``path`` (None where there is none)."""
        value = self.data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value


def interpolate(text: str, env: Mapping[str, str], where: str,
                used: list[tuple[str, str | None]] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from ``env``.

    A default ends at the first ``}`` and holds no newline. One pass over ``text``: the time
    is linear in its length whatever it holds (a regex would rescan from every ``${``).
    ``used``, if given, gets ``(name, value)`` for each variable expanded (value None: its
    default was used), so an error about the value can say where it came from.
    """
    out: list[str] = []
    done = 0  # text[:done] is in out
    stop, stop_from = None, len(text) + 1  # the first "}" or newline at or after stop_from
    at = text.find("${")
    while at >= 0:
        name = _NAME.match(text, at + 2)
        close, default = -1, None
        if name is not None:
            after = name.end()
            if text.startswith("}", after):
                close = after
            elif text.startswith(":-", after):
                if stop_from > after + 2 or (stop is not None and stop.start() < after + 2):
                    stop, stop_from = _STOP.search(text, after + 2), after + 2
                if stop is not None and stop.group() == "}":
                    close, default = stop.start(), text[after + 2:stop.start()]
        if close < 0 or name is None:
            at = text.find("${", at + 1)
            continue
        value = env.get(name.group())
        if value is None or (value == "" and default is not None):
            if default is None:
                var = name.group()
                raise GraphError(f"{where}: environment variable {var} is not set"
                                 f"\n  fix: export {var}=... or write ${{{var}:-default}} in "
                                 "the graph")
            value = default
            if used is not None:
                used.append((name.group(), None))
        elif used is not None:
            used.append((name.group(), value))
        out += (text[done:at], value)
        done = close + 1
        at = text.find("${", done)
    out.append(text[done:])
    return "".join(out)


def read_text(file: Path) -> str:
    """The text of a graph file: at most :data:`MAX_FILE_BYTES`, strict UTF-8 (BOM allowed).

    Raises GraphError naming the file and the limit, or the line and byte offset of the
    first byte that is not UTF-8 text (a NUL byte counts: it is how UTF-16 looks).
    """
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a fifo or a device would block or flood
            raise GraphError(f"{file}: not a regular file"
                             "\n  fix: give the path of a graph YAML file")
        with file.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise GraphError(f"{file}: cannot read the graph file: {exc.strerror}"
                         "\n  fix: give the path of a readable graph YAML file") from exc
    if len(data) > MAX_FILE_BYTES:
        raise GraphError(f"{file}: the graph file is over 1 MiB (limit {MAX_FILE_BYTES} bytes)"
                         "\n  fix: a graph holds agents and their wiring; keep large data in "
                         "files that agents read (a path in their params)")
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    nul = data.find(b"\0", start)
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = start + exc.start if nul < 0 else min(nul, start + exc.start)
    else:
        if nul < 0:
            return text
        bad = nul
    what = ", a NUL byte" if bad == nul else ""
    utf16 = data.startswith(_UTF16_BOMS) or b"\0" in data[:64]
    if utf16:
        what += ": it looks like UTF-16 or UTF-32"
    line = data.count(b"\n", 0, bad) + 1
    source = "UTF-16" if utf16 else "LATIN1"
    raise GraphError(f"{file}:{line}: not UTF-8 text (byte {bad}){what}"
                     f"\n  fix: save the file as UTF-8, e.g.  iconv -f {source} -t UTF-8 "
                     f"{file} > fixed.yaml  (check which encoding it has with  file {file})")


class _Bounds(Composer):
    """A composer that refuses deep nesting, too many values, and aliases that add too much.

    The tree it composes is walked with aliases expanded, so every alias adds the size of
    the anchored node to the count; sizes and depths of finished nodes are kept by id.
    """

    file: Path
    depth: int
    nodes: int
    alias_nodes: int
    sizes: dict[int, tuple[int, int]]

    def _start(self, file: Path) -> None:
        self.file = file
        self.depth = self.nodes = self.alias_nodes = 0
        self.sizes = {}  # per finished collection node (by id): (values, depth), expanded

    def _size(self, node: yaml.Node) -> tuple[int, int]:
        return (1, 0) if isinstance(node, yaml.ScalarNode) else self.sizes[id(node)]

    def _error(self, mark: Any, problem: str, fix: str) -> GraphError:
        return GraphError(f"{self.file}:{mark.line + 1}: {problem}\n  fix: {fix}")

    def _too_deep(self, mark: Any) -> GraphError:
        return self._error(mark, f"nested too deep (limit {MAX_DEPTH})",
                           "a graph needs a few levels of lists and mappings; flatten the "
                           "nesting there")

    def _count(self, values: int, mark: Any) -> None:
        self.nodes += values
        if self.nodes > MAX_NODES:
            raise self._error(mark, f"the file holds over {MAX_NODES} values (limit "
                              f"{MAX_NODES}, aliases expanded)",
                              "a graph holds agents and their wiring; keep large data in "
                              "files that agents read (a path in their params)")

    def _mark(self) -> Any:
        return self.peek_event().start_mark  # type: ignore[attr-defined]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose one node, counting nesting depth and the values aliases add."""
        mark = self._mark()
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            node = super().compose_node(parent, index)
            if node is None:
                return None
            if not isinstance(node, yaml.ScalarNode) and id(node) not in self.sizes:
                raise self._error(mark, "an alias is inside its own anchor (a recursive "
                                  "document)", "an alias may name only a finished anchor")
            values, depth = self._size(node)
            self.alias_nodes += values
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise self._error(mark, f"aliases expand to over {MAX_ALIAS_NODES} values "
                                  f"(limit {MAX_ALIAS_NODES})", "write the values out, or use "
                                  "fewer and smaller anchors (&name) and aliases (*name)")
            if self.depth + depth > MAX_DEPTH:
                raise self._too_deep(mark)
            self._count(values, mark)
            return node
        self._count(1, mark)
        if not self.check_event(yaml.SequenceStartEvent,  # type: ignore[attr-defined]
                                yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._too_deep(mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if node is None:
            return None
        items = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair]
        sizes = [self._size(n) for n in items]
        self.sizes[id(node)] = (1 + sum(v for v, _ in sizes),
                                1 + max((d for _, d in sizes), default=0))
        return node


class _PyLoader(_Bounds, yaml.SafeLoader):
    """The bounded composer over PyYAML's pure-Python parser."""

    def __init__(self, text: str, file: Path) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._start(file)


if _CParser is not None:
    class _CLoader(_Bounds, _CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """The bounded composer over libyaml's parser (many times faster, same events)."""

        def __init__(self, text: str, file: Path) -> None:
            _CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start(file)


def _compose(file: Path, text: str) -> yaml.Node | None:
    """The YAML node tree of ``text``, within the bounds; GraphError naming file and line."""
    loader: _Bounds | None = None
    try:
        loader = (_PyLoader if _CParser is None else _CLoader)(text, file)
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = printable(chr(exc.character)) if isinstance(exc.character, int) else "?"
        raise GraphError(f"{file}:{line}: not valid YAML: character {char} is not allowed"
                         "\n  fix: remove the control character there") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if "maximum nesting depth" in problem:  # libyaml >= 0.2.6 (PyYAML 6.0.4) stops first
            raise GraphError(f"{file}{at}: nested too deep (limit {MAX_DEPTH})"
                             "\n  fix: flatten the nesting") from exc
        raise GraphError(f"{file}{at}: not valid YAML: {printable(problem)}"
                         "\n  fix: check the indentation, colons, quotes and brackets there"
                         ) from exc
    except RecursionError as exc:  # cannot happen within MAX_DEPTH; never a traceback
        raise GraphError(f"{file}: nested too deep (limit {MAX_DEPTH})"
                         "\n  fix: flatten the nesting") from exc
    finally:
        if loader is not None:
            loader.dispose()  # type: ignore[attr-defined]


def load_marked(file: Path, env: Mapping[str, str] | None = None) -> Marked:
    """Load a YAML file safely; expand variables in strings; keep line numbers.

    The file is read within the bounds this module names (size, encoding, nesting,
    aliases); a file outside them raises GraphError naming the file, line and limit.
    """
    env = os.environ if env is None else env
    root = _compose(file, read_text(file))
    constructor = yaml.SafeLoader("")
    lines: dict[Path_, int] = {}
    from_env: dict[Path_, list[tuple[str, str | None]]] = {}

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
                from_env.pop(path, None)  # a ${VAR} in a key: not the mapping's value
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
            value = constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, KeyError) as exc:  # "!!int abc"
            raise GraphError(f"{file}:{node.start_mark.line + 1}: cannot read this value: "
                             f"{printable(getattr(exc, 'problem', exc))}"
                             "\n  fix: remove the tag or quote the value") from exc
        if isinstance(value, str) and "${" in value:
            used: list[tuple[str, str | None]] = []
            raw = interpolate(value, env, f"{file}:{node.start_mark.line + 1}", used)
            if used:
                from_env[path] = used
            if not node.style:  # plain scalar (libyaml says "", PyYAML None): re-resolve
                try:
                    resolved = yaml.safe_load(raw) if raw.strip() else raw
                except yaml.YAMLError:
                    return raw
                # only scalars: a variable must not inject a mapping or a list, nor lose a '#...'
                return resolved if isinstance(resolved, int | float | bool) else raw
            return raw
        return value

    try:
        data = convert(root, ()) if root is not None else None
    finally:
        constructor.dispose()
    return Marked(file, data, lines, from_env)
