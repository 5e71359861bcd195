"""``procgraph plc-sim``: a simulated PLC (Modbus TCP server) for demos and tests.

Registered with the procgraph CLI through the ``procgraph.commands`` entry-point group
(``plc-sim = "procgraph.agents.modbus.cli:register"``).
"""

from __future__ import annotations

from typing import Annotated

import typer


def plc_sim(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Modbus TCP port (502 needs root)")] = 5020,
    summary_every: Annotated[float, typer.Option(help="print a summary every SECONDS")] = 10.0,
    slots: Annotated[int, typer.Option(min=1, max=64, help="mailbox slots")] = 1,
    base: Annotated[int, typer.Option(min=0, help="first holding register")] = 0,
    taken_seq: Annotated[bool, typer.Option(help="write each taken part's seq after the "
                                            "last slot")] = False,
) -> None:
    """Run a simulated PLC that logs each part outcome and clears the handshake."""
    from procgraph.agents.modbus.registers import RegisterMap
    from procgraph.agents.modbus.sim_main import main

    main(host, port, summary_every, RegisterMap(base=base, slots=slots, taken_seq=taken_seq))


def register(app: typer.Typer) -> None:
    """Add the ``plc-sim`` command to the CLI."""
    app.command("plc-sim")(plc_sim)
