"""procgraph: industrial edge-AI lines as graphs of agents on Redis streams.

The public API is these few names; everything else lives in the module that owns it
(``procgraph.state``, ``procgraph.health``, ``procgraph.registry``, ``procgraph.errors``,
``procgraph.settings``, ``procgraph.testing``).
"""

from procgraph.agent import Agent
from procgraph.context import AgentContext
from procgraph.errors import BrokerUnavailable, ProcgraphError
from procgraph.message import Message
from procgraph.ports import Input, Output
from procgraph.state import AgentState

__version__ = "0.1.0"
__all__ = [
    "Agent",
    "AgentContext",
    "AgentState",
    "BrokerUnavailable",
    "Input",
    "Message",
    "Output",
    "ProcgraphError",
    "__version__",
]
