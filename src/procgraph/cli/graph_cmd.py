"""``procgraph graph FILE``: draw the graph as Mermaid, Graphviz DOT or a self-contained page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

import typer

from procgraph.cli.common import load_or_exit
from procgraph.graph import GraphPlan


def to_mermaid(plan: GraphPlan) -> str:
    """Mermaid flowchart: one node per agent, one edge per wire labelled with ports."""
    lines = ["flowchart LR"]
    for a in plan.agents.values():
        label = f"{a.name}<br/><small>{a.class_path.split(':')[-1]}"
        label += f" x{a.replicas}" if a.replicas > 1 else ""
        lines.append(f'    {a.name}["{label}</small>"]')
    for a in plan.agents.values():
        for inp in a.inputs:
            src, port = inp.source.split(".", 1)
            arrow = "-.->" if inp.policy == "latest" else "-->"
            lines.append(f"    {src} {arrow}|{port} → {inp.port}| {a.name}")
    return "\n".join(lines)


def to_dot(plan: GraphPlan) -> str:
    """Graphviz DOT of the same graph."""
    lines = [f'digraph "{plan.name}" {{', "  rankdir=LR; node [shape=box];"]
    for a in plan.agents.values():
        lines.append(f'  "{a.name}" [label="{a.name}\\n{a.class_path.split(":")[-1]}"];')
    for a in plan.agents.values():
        for inp in a.inputs:
            src, port = inp.source.split(".", 1)
            style = ' style="dashed"' if inp.policy == "latest" else ""
            lines.append(f'  "{src}" -> "{a.name}" [label="{port} → {inp.port}"{style}];')
    lines.append("}")
    return "\n".join(lines)


def _ranks(plan: GraphPlan) -> dict[str, int]:
    """Column of each agent: 0 for sources, else one more than its furthest producer."""
    producers = {a.name: [i.source.split(".", 1)[0] for i in a.inputs]
                 for a in plan.agents.values()}
    rank: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name not in rank:
            ups = [p for p in producers.get(name, []) if p not in seen and p in producers]
            rank[name] = 1 + max((of(p, seen | {name}) for p in ups), default=-1)
        return rank[name]

    for name in producers:
        of(name, frozenset())
    return rank


def to_html(plan: GraphPlan) -> str:
    """A page that draws the graph as inline SVG: no script, no network, no install."""
    box_w, box_h, gap_x, gap_y, pad = 170, 54, 150, 46, 20
    rank = _ranks(plan)
    columns: dict[int, list[str]] = {}
    for name in plan.agents:
        columns.setdefault(rank[name], []).append(name)
    pos = {name: (pad + c * (box_w + gap_x), pad + r * (box_h + gap_y))
           for c, names in columns.items() for r, name in enumerate(names)}
    width = pad * 2 + (max(columns, default=0) + 1) * (box_w + gap_x) - gap_x
    height = pad * 2 + max((len(v) for v in columns.values()), default=1) * (box_h + gap_y)
    esc = html.escape
    parts: list[str] = []
    for a in plan.agents.values():
        for inp in a.inputs:
            src, port = inp.source.split(".", 1)
            if src not in pos:
                continue
            (sx, sy), (tx, ty) = pos[src], pos[a.name]
            x1, y1, x2, y2 = sx + box_w, sy + box_h / 2, float(tx), ty + box_h / 2
            if x2 <= x1:  # a back edge: loop under the boxes
                mid = max(y1, y2) + box_h
                d = f"M{x1},{y1} C{x1 + 60},{mid} {x2 - 60},{mid} {x2},{y2}"
            else:
                d = f"M{x1},{y1} C{(x1 + x2) / 2},{y1} {(x1 + x2) / 2},{y2} {x2},{y2}"
            dash = ' stroke-dasharray="6 4"' if inp.policy == "latest" else ""
            label = esc(f"{port} → {inp.port}")
            parts.append(f'<path class="edge" d="{d}"{dash} marker-end="url(#arrow)">'
                         f"<title>{esc(inp.source)} → {esc(a.name)}.{esc(inp.port)} "
                         f"({inp.policy})</title></path>"
                         f'<text class="port" x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 4}" '
                         f'text-anchor="middle">{label}</text>')
    for a in plan.agents.values():
        x, y = pos[a.name]
        cls = a.class_path.split(":")[-1] + (f" x{a.replicas}" if a.replicas > 1 else "")
        parts.append(f'<g class="agent"><title>{esc(a.class_path)}</title>'
                     f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="8"/>'
                     f'<text x="{x + box_w / 2}" y="{y + 22}" text-anchor="middle" '
                     f'class="name">{esc(a.name)}</text>'
                     f'<text x="{x + box_w / 2}" y="{y + 40}" text-anchor="middle" '
                     f'class="cls">{esc(cls)}</text></g>')
    title = esc(f"procgraph: {plan.name}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; color: #222; }}
svg {{ max-width: 100%; height: auto; }}
.agent rect {{ fill: #eef4ff; stroke: #3b6fd6; stroke-width: 1.5; }}
.name {{ font-weight: 600; font-size: 14px; }} .cls {{ font-size: 12px; fill: #555; }}
.edge {{ fill: none; stroke: #666; stroke-width: 1.5; }}
.port {{ font-size: 11px; fill: #444; paint-order: stroke; stroke: #fff; stroke-width: 3; }}
</style></head><body>
<h1>{title}</h1>
<p>{len(plan.agents)} agents; dashed edges are <code>latest</code> (may skip), solid ones
<code>lossless</code>. Hover a box for its class.</p>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}"
 height="{height}" role="img" aria-label="{title}">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8"
 markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/>
</marker></defs>
{chr(10).join(parts)}
</svg></body></html>
"""


FORMATS = {"mermaid": to_mermaid, "dot": to_dot, "html": to_html}


def graph(
    file: Annotated[Path, typer.Argument(help="graph YAML file")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid, dot or html")
                   ] = "mermaid",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="write to this file instead of stdout")] = None,
) -> None:
    """Print the graph as Mermaid (default), Graphviz DOT or a self-contained HTML page
    (inline SVG: opens in any browser, nothing to install); dashed edges are 'latest'."""
    plan = load_or_exit(file)
    if fmt not in FORMATS:
        raise typer.BadParameter("use html, mermaid or dot", param_hint="--format")
    text = FORMATS[fmt](plan)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the command to the CLI."""
    app.command()(graph)
