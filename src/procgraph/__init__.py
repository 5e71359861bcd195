"""procgraph."""
