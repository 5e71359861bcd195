"""procgraph built-in modbus agents."""
