"""Write docs/api.md, the public API reference, from the docstrings of the public API.

    python tools/gen_api_docs.py            # (re)write docs/api.md
    python tools/gen_api_docs.py --check    # exit 1 if docs/api.md is out of date

The public API is the names in ``procgraph.__all__`` and the public modules listed in
:data:`MODULES`. For each module: its docstring, its public constants, classes (signature or
fields, docstring, public methods and properties with their signature and the first paragraph
of their docstring) and functions. The output is plain Markdown in a stable order (the
module's ``__all__``, else the order of the source), with no timestamps, so it can be
checked in and compared (``tests/test_api_docs.py``). A module that cannot be imported is
skipped with a note on stderr.
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api.md"

#: the public modules, in the order the reference shows them
MODULES = (
    "procgraph",
    "procgraph.health",
    "procgraph.state",
    "procgraph.registry",
    "procgraph.errors",
    "procgraph.settings",
    "procgraph.testing",
    "procgraph.safetext",
    "procgraph.imageheader",
)

HEADER = """\
# API reference

The public API of procgraph: the names `procgraph` exports and the modules below. Agents
(the built-in ones included) use only these; everything else is internal and may change.
See [concepts](concepts.md) for how the pieces fit together.

This page is generated from the docstrings by `python tools/gen_api_docs.py`; do not edit
it by hand (`tests/test_api_docs.py` fails when it is out of date).
"""

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`~?([^`]+)`")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_QUALIFIED = re.compile(r"\b(?:[a-z_][\w]*\.)+([A-Z]\w*)")


@dataclass
class Entry:
    """One documented name: its heading level, title and Markdown body."""

    qualname: str
    lines: list[str] = field(default_factory=list)


# -- text --------------------------------------------------------------------------------------
def markdown(doc: str) -> str:
    """A docstring in Markdown: reST roles and double backquotes become code spans."""
    text = _ROLE.sub(r"`\1`", doc)
    return text.replace("``", "`")


def own_doc(obj: Any) -> str | None:
    """The docstring an object has itself (a class's is not inherited), cleaned."""
    raw = obj.__dict__.get("__doc__") if inspect.isclass(obj) else inspect.getdoc(obj)
    return inspect.cleandoc(raw) if isinstance(raw, str) and raw.strip() else None


def first_paragraph(doc: str) -> str:
    """The first paragraph of a cleaned docstring, on one line."""
    return " ".join(doc.split("\n\n", 1)[0].split())


def clean(text: str) -> str:
    """A signature or value with memory addresses removed and module paths shortened."""
    return _QUALIFIED.sub(r"\1", _ADDRESS.sub("", text))


class _Raw(str):
    """An annotation string that prints without quotes in a signature."""

    def __repr__(self) -> str:
        return str(self)


def _unquoted(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return annotation
    return _Raw(annotation if isinstance(annotation, str) else type_text(annotation))


def signature(obj: Callable[..., Any], drop_first: bool = False, returns: bool = True) -> str:
    """``(a: int, b: str = 'x') -> T`` of a callable, without ``self``/``cls``."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())[1 if drop_first else 0:]
    params = [p.replace(annotation=_unquoted(p.annotation)) for p in params]
    ret = _unquoted(sig.return_annotation) if returns else inspect.Signature.empty
    return clean(str(sig.replace(parameters=params, return_annotation=ret)))


def type_text(annotation: Any) -> str:
    """How an annotation reads in the source (strings stay as written)."""
    if isinstance(annotation, str):
        return annotation
    if inspect.isclass(annotation) and not getattr(annotation, "__args__", None):
        return annotation.__qualname__
    return clean(str(annotation)).replace("typing.", "")


def value_text(value: Any) -> str:
    """A short, stable repr of a constant or default."""
    if inspect.isclass(value):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, tuple) and any(inspect.isclass(v) for v in value):
        return "(" + ", ".join(value_text(v) for v in value) + ")"
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    text = clean(repr(value))
    return text if len(text) <= 90 else text[:87] + "..."


# -- what is public ----------------------------------------------------------------------------
def _source_line(obj: Any) -> int:
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return 1 << 30


def _defined_in(obj: Any, module: ModuleType) -> bool:
    name = getattr(obj, "__module__", None)
    return isinstance(name, str) and (name == module.__name__
                                      or name.startswith(module.__name__ + "."))


def public_names(module: ModuleType) -> list[str]:
    """``__all__`` if the module has one, else its own public classes and functions."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return [n for n in names if not n.startswith("__")]
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if _defined_in(obj, module):
            found.append((getattr(obj, "__module__", ""), _source_line(obj), name))
    return [name for _, _, name in sorted(found)]


def constants(module: ModuleType) -> list[tuple[str, Any, str]]:
    """``(name, value, doc)`` of the public UPPER_CASE constants assigned in the module."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return []
    lines = source.splitlines()
    out = []
    for node in ast.parse(source).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if not isinstance(target, ast.Name) or not re.fullmatch(r"[A-Z][A-Z0-9_]*",
                                                                    target.id):
                continue
            comment: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                comment.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            if hasattr(module, target.id):
                out.append((target.id, getattr(module, target.id), " ".join(comment)))
    return out


def members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods, properties and nested classes a class defines itself."""
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, staticmethod | classmethod):
            yield name, attr.__func__
        elif isinstance(attr, property) or inspect.isfunction(attr) or _nested(cls, name, attr):
            yield name, attr


def _nested(cls: type, name: str, attr: Any) -> bool:
    """True for a class defined in the body of ``cls`` (e.g. ``Agent.Params``)."""
    return inspect.isclass(attr) and attr.__qualname__ == f"{cls.__qualname__}.{name}"


# -- rendering ---------------------------------------------------------------------------------
def _pydantic_fields(cls: type) -> dict[str, Any] | None:
    fields = getattr(cls, "model_fields", None)
    return fields if isinstance(fields, dict) and hasattr(cls, "model_validate") else None


def _annotation_of(cls: type, name: str, fallback: Any) -> str:
    for klass in cls.__mro__:
        raw = inspect.get_annotations(klass)
        if name in raw:
            return type_text(raw[name])
    return type_text(fallback)


def _field_line(cls: type, name: str, info: Any) -> str:
    text = f"- `{name}: {_annotation_of(cls, name, info.annotation)}"
    factory = getattr(info, "default_factory", None)
    if factory is not None:
        text += f" = {value_text(factory())}" if factory in (dict, list, set, tuple) else ""
    elif not info.is_required():
        text += f" = {value_text(info.default)}"
    text += "`"
    if info.description:
        text += f": {markdown(info.description)}"
    return text


def render_class(cls: type, title: str, missing: list[str], level: int = 3) -> list[str]:
    """The Markdown of one class, its fields or signature, methods and nested classes."""
    fields = _pydantic_fields(cls)
    bases = [b for b in cls.__bases__ if b is not object and b.__module__ != "typing"]
    head = "#" * level
    protocol = getattr(cls, "_is_protocol", False)
    if fields is None and not issubclass(cls, BaseException) and not protocol:
        sig = signature(cls, returns=False)
        lines = [f"{head} class `{title}{sig}`", ""]
    else:
        base_text = ", ".join(b.__qualname__ for b in bases)
        if protocol:
            base_text = ", ".join([*(b.__qualname__ for b in bases), "Protocol"])
        lines = [f"{head} class `{title}({base_text})`" if base_text else f"{head} class "
                 f"`{title}`", ""]
    doc = own_doc(cls)
    if doc is None:
        missing.append(title)
    else:
        lines += [markdown(doc), ""]
    if fields is None and bases and not issubclass(cls, BaseException) and not protocol:
        lines += ["Bases: " + ", ".join(f"`{b.__qualname__}`" for b in bases), ""]
    own_fields = [n for n in fields or {} if any(
        n in inspect.get_annotations(k) for k in cls.__mro__
        if k.__module__.startswith("procgraph"))]
    if own_fields and fields is not None:
        lines += ["Fields:", ""]
        lines += [_field_line(cls, n, fields[n]) for n in own_fields]
        lines.append("")
    nested = []
    for name, attr in members(cls):
        qual = f"{title}.{name}"
        if inspect.isclass(attr):
            nested.append((qual, attr))
            continue
        if isinstance(attr, property):
            ret = ""
            if attr.fget is not None:
                ann = attr.fget.__annotations__.get("return")
                ret = f" -> {type_text(ann)}" if ann is not None else ""
            lines.append(f"- `{name}{ret}` (property)")
            target: Any = attr.fget
        else:
            lines.append(f"- `{name}{signature(attr, drop_first=_takes_self(cls, name))}`")
            target = attr
        mdoc = inspect.getdoc(target) if target is not None else None
        if mdoc:
            lines[-1] += f": {markdown(first_paragraph(mdoc))}"
        else:
            missing.append(qual)
    if lines[-1] != "":
        lines.append("")
    for qual, attr in nested:
        lines += render_class(attr, qual, missing, level + 1)
    return lines


def _takes_self(cls: type, name: str) -> bool:
    return not isinstance(vars(cls)[name], staticmethod)


def render_function(func: Callable[..., Any], title: str, missing: list[str]) -> list[str]:
    """The Markdown of one function: signature and docstring."""
    lines = [f"### `{title}{signature(func)}`", ""]
    doc = own_doc(func)
    if doc is None:
        missing.append(title)
    else:
        lines += [markdown(doc), ""]
    return lines


def render_module(module: ModuleType, missing: list[str]) -> list[str]:
    """The Markdown of one public module."""
    name = module.__name__
    lines = [f"## `{name}`", ""]
    doc = own_doc(module)
    if doc is None:
        missing.append(name)
    else:
        lines += [markdown(doc), ""]
    consts = [(n, v, d) for n, v, d in constants(module)
              if n in getattr(module, "__all__", [n])]
    version = getattr(module, "__version__", None) if name == "procgraph" else None
    if consts or version is not None:
        lines += ["Constants:", ""]
        if version is not None:
            lines.append(f"- `__version__ = {version!r}`")
        for cname, value, cdoc in consts:
            lines.append(f"- `{cname} = {value_text(value)}`" + (f": {markdown(cdoc)}"
                                                                 if cdoc else ""))
        lines.append("")
    for public in public_names(module):
        obj = getattr(module, public, None)
        title = f"{name}.{public}"
        home = getattr(obj, "__module__", None)
        if home != name and home in MODULES:  # re-exported: documented in its own module
            kind = "class " if inspect.isclass(obj) else ""
            doc = own_doc(obj)
            if doc is None:
                missing.append(title)
            summary = f"{markdown(first_paragraph(doc))} " if doc else ""
            lines += [f"### {kind}`{title}`", "",
                      f"{summary}See [`{home}.{public}`](#{anchor(home)}).", ""]
        elif inspect.isclass(obj):
            lines += render_class(obj, title, missing)
        elif callable(obj):
            lines += render_function(obj, title, missing)
    return lines


def anchor(name: str) -> str:
    """The GitHub-style anchor of a ``## `name` `` heading."""
    return re.sub(r"[^\w\- ]", "", name.lower()).replace(" ", "-")


def generate(modules: tuple[str, ...] = MODULES,
             note: Callable[[str], None] | None = None) -> tuple[str, list[str]]:
    """The reference as Markdown, and the public names that lack a docstring.

    A module that cannot be imported is left out; ``note`` (default: print to stderr) is
    told which one and why.
    """
    say = note or (lambda text: print(text, file=sys.stderr))
    found: list[ModuleType] = []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except Exception as exc:  # a module another change has not written yet
            say(f"gen_api_docs: skipping {name}: {type(exc).__name__}: {exc}")
    missing: list[str] = []
    body: list[str] = []
    for module in found:
        body += render_module(module, missing)
    toc = [f"- [`{m.__name__}`](#{anchor(m.__name__)})" for m in found]
    text = "\n".join([HEADER, "## Modules", "", *toc, "", *body]).rstrip() + "\n"
    return text, missing


def main(argv: list[str] | None = None) -> int:
    """Write docs/api.md (or, with ``--check``, tell whether it is up to date)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (docs/api.md)")
    args = ap.parse_args(argv)
    text, missing = generate()
    for name in missing:
        print(f"gen_api_docs: no docstring: {name}", file=sys.stderr)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python tools/gen_api_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
