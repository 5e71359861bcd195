"""procgraph built-in hmi agents."""
