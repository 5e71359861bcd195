"""procgraph: industrial edge-AI lines as graphs of agents on Redis streams.

The public API is these few names; everything else lives in the module that owns it.
"""

from procgraph.agent import Agent, AgentContext
from procgraph.errors import ProcgraphError
from procgraph.message import Message
from procgraph.ports import Input, Output

__version__ = "0.1.0"
__all__ = ["Agent", "AgentContext", "Input", "Message", "Output", "ProcgraphError", "__version__"]
