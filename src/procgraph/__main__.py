"""``python -m procgraph`` is the ``procgraph`` command."""

from procgraph.cli.main import main

main()
