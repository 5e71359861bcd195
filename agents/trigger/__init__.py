"""The part trigger: one ``Trigger`` per part, as the photo-eye of a real line gives.

Modules: :mod:`.agent` (``PartTrigger``, the source agent).
"""

from procgraph.agents.trigger.agent import PartTrigger

__all__ = ["PartTrigger"]
