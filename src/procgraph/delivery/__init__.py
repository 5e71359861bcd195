"""The delivery rules, one module each (the guarantee is stated in each module's docstring).

- :mod:`~procgraph.delivery.acks`: an entry is acknowledged only after it was handled
  (and its outputs and state written); queued acks go out with the next read or a flush.
- :mod:`~procgraph.delivery.claims`: a dead replica's pending entries are taken over by a
  live sibling once its heartbeat is gone (``XCLAIM``); a live replica's entries (in hand or
  read ahead) are never claimed, by itself or by a sibling, however long its handler takes.
- :mod:`~procgraph.delivery.recovery`: a restarted replica re-handles its own pending
  entries one at a time; the entry that keeps crashing it is dead-lettered.
- :mod:`~procgraph.delivery.deadletter`: entries that cannot be handled move to
  ``<stream>:dead`` with the reason, then are acknowledged.
- :mod:`~procgraph.delivery.backpressure`: lossless edges trim only what every lossless
  group acknowledged (``XTRIM MINID``) and block the producer while at the cap.
- :mod:`~procgraph.delivery.sendbuffer`: a source's sends are written at once when the port
  is idle, and what queued behind a write in flight goes out in one pipelined XADD batch.

The streams plumbing they use (connections, XADD, XREADGROUP, retries) is
:mod:`procgraph.transport`; the loop that applies them is :mod:`procgraph.runtime`.
"""
