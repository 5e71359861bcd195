"""procgraph built-in classifier agents."""
