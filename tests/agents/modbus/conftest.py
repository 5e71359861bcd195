"""Fixtures of the Modbus tests: simulated PLCs and dropping proxies on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from procgraph.agents.modbus.registers import RegisterMap
from procgraph.agents.modbus.sim import SimulatedPlc, run_in_thread

from pgtest_modbus import HOST, DroppingProxy, free_port


@pytest.fixture
def plc_factory() -> Iterator[Callable[..., SimulatedPlc]]:
    """Start simulated PLCs on free ports; stop them all at the end."""
    started: list[SimulatedPlc] = []

    def make(regmap: RegisterMap | None = None, port: int | None = None) -> SimulatedPlc:
        plc = run_in_thread(HOST, port or free_port(), regmap or RegisterMap())
        started.append(plc)
        return plc

    yield make
    for plc in started:
        plc.stop_thread()


@pytest.fixture
def plc(plc_factory: Callable[..., SimulatedPlc]) -> SimulatedPlc:
    """One simulated PLC with the default register map."""
    return plc_factory()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], DroppingProxy]]:
    proxies: list[DroppingProxy] = []

    def make(upstream_port: int) -> DroppingProxy:
        p = DroppingProxy(upstream_port)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()
