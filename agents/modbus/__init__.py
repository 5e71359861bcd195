"""procgraph PLC agents: Modbus writer, register map, simulated PLC."""

from procgraph.agents.modbus.agent import ModbusPlcAgent
from procgraph.agents.modbus.sim_agent import SimulatedPlcAgent

__all__ = ["ModbusPlcAgent", "SimulatedPlcAgent"]
