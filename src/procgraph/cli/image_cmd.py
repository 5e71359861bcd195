"""``procgraph image build GRAPH``: build the agent image of a graph (deploy/Dockerfile)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from procgraph import __version__
from procgraph.cli.common import fail, load_or_exit
from procgraph.errors import ProcgraphError
from procgraph.safetext import printable

image_app = typer.Typer(name="image", no_args_is_help=True,
                        help="Build the agent image of a graph (a Docker engine is needed).")


@image_app.command("build")
def build(
    graph: Annotated[Path, typer.Argument(help="graph YAML file")],
    tag: Annotated[str | None, typer.Option(
        "--tag", "-t", help="image tag (default: procgraph-<graph name>:<version>)")] = None,
    base: Annotated[str | None, typer.Option(
        help="base image with python3 + venv, already in the engine (default: "
             "python:3.11-slim, else procgraph/base:bookworm of tools/make_base_image.sh)")]
    = None,
    genicam: Annotated[bool, typer.Option(
        help="also install the genicam extra (harvesters + genicam)")] = False,
    dockerfile: Annotated[Path | None, typer.Option(
        help="Dockerfile (default: deploy/Dockerfile of the procgraph source)")] = None,
) -> None:
    """Build an image with procgraph, the graph's folder (graph files, agent modules, models).

    The wheelhouse is made on the host (nothing is downloaded inside the build); the graph
    ends up at /app/graphs/<file>, and the image runs as user 10001 with ENTRYPOINT procgraph.
    The engine is the one of $DOCKER_HOST (docker SDK: pip install 'procgraph[containers]').
    """
    from procgraph.image import build_image

    plan = load_or_exit(graph)
    tag = tag or f"procgraph-{plan.name.lower()}:{__version__}"

    def progress(line: str) -> None:
        typer.echo(printable(line, limit=500))

    try:
        result = build_image(graph, tag, base=base, genicam=genicam, dockerfile=dockerfile,
                             progress=progress)
    except ProcgraphError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"built {result.tag} ({result.image_id[7:19]}, {result.size_bytes / 1e6:.0f} MB)"
               f" in {result.seconds:.0f} s; run: docker run --rm {result.tag} "
               f"validate /app/graphs/{graph.name}")


def register(app: typer.Typer) -> None:
    """Add the ``image`` command group to the CLI."""
    app.add_typer(image_app)
