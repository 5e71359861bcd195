"""procgraph built-in camera agents."""
