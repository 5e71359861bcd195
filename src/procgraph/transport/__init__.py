"""Redis streams transport: connections, capped writers, group readers, retries.

- :mod:`~procgraph.transport.connect`: ``connect(url)``, a client with the zero-copy packer
- :mod:`~procgraph.transport.packer`: the RESP packer that does not copy large frames
- :mod:`~procgraph.transport.retry`: ``Backoff``, ``retry`` and ``TRANSIENT`` (outages)
- :mod:`~procgraph.transport.writer`: ``WriterConfig``, ``StreamWriter`` (XADD, caps)
- :mod:`~procgraph.transport.reader`: ``ReadSpec``, ``GroupReader`` (groups, XREADGROUP)

The delivery rules built on these (acks, claims, recovery, dead letters, backpressure,
source send buffering) live in :mod:`procgraph.delivery`.
"""

from procgraph.transport.connect import connect
from procgraph.transport.packer import _CUTOFF, _ZeroCopyPacker
from procgraph.transport.reader import Entry, GroupReader, ReadSpec
from procgraph.transport.retry import TRANSIENT, Backoff, retry
from procgraph.transport.writer import StreamWriter, WriterConfig

__all__ = [
    "TRANSIENT",
    "_CUTOFF",
    "Backoff",
    "Entry",
    "GroupReader",
    "ReadSpec",
    "StreamWriter",
    "WriterConfig",
    "_ZeroCopyPacker",
    "connect",
    "retry",
]
