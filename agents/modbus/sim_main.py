"""``procgraph plc-sim`` behind the CLI: run a :class:`~.sim.SimulatedPlc` until Ctrl-C and
print its summary line (:func:`format_summary`, also the simulated-PLC agent's log line)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from .registers import DEFAULT_REGISTER_MAP, RegisterMap
from .sim import SimulatedPlc


def format_summary(summary: dict[str, Any]) -> str:
    """:meth:`SimulatedPlc.summary` as one line: parts by outcome, rejects, and any
    duplicate keys, seq gaps, handshake violations or invalid writes (named)."""
    outcomes = ", ".join(f"{k} {v}" for k, v in summary["outcomes"].items() if v) or "none"
    text = (f"PLC summary: {summary['parts']} parts ({outcomes}), "
            f"{summary['rejects']} rejects")
    problems = [f"{len(summary[k])} {label}" for k, label in (
        ("duplicates", "duplicate keys"), ("gaps", "seq gaps"),
        ("violations", "handshake violations"), ("invalid", "invalid writes"),
        ("unflagged", "parts written but never flagged")) if summary.get(k)]
    text += "; " + ", ".join(problems) if problems else "; no duplicates, gaps or violations"
    if summary["duplicates"]:
        text += f"; DUPLICATES: {summary['duplicates']}"
    return text


def main(
    host: str = "127.0.0.1",
    port: int = 5020,
    summary_every_s: float = 10.0,
    regmap: RegisterMap = DEFAULT_REGISTER_MAP,
) -> None:
    """Run a simulated PLC until Ctrl-C, printing a summary every ``summary_every_s``
    seconds (0 = only at exit) and once on exit. Entry point of ``procgraph plc-sim``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    plc = SimulatedPlc(host, port, regmap)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await plc.start()
        print(f"simulated PLC on {host}:{port}: {regmap.describe()}. Ctrl-C to stop.", flush=True)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), summary_every_s if summary_every_s > 0 else None
                    )
                if summary_every_s > 0 and not stop.is_set():
                    print(format_summary(plc.summary()), flush=True)
        finally:
            await plc.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        print(format_summary(plc.summary()), flush=True)
