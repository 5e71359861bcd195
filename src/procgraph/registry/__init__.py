"""The model registry: ONNX models kept in a broker, versioned, with a "model changed" event.

This is the RedisAI idea without RedisAI: the broker only *stores* models; inference runs in
the classifier agents with onnxruntime. Layout in Redis (key names from procgraph.constants):

- ``pg:model:<name>`` (hash): ``current`` -> version, ``meta:<version>`` -> JSON record
  (version, sha256, size, pushed time);
- ``pg:model:<name>:versions`` (list): versions, oldest first;
- ``pg:model:<name>:blob:<version>`` (string): the ONNX bytes of that version;
- ``pg:models`` (set): every model name.

Every change of the current version is PUBLISHed on ``pg:model-events:<name>`` as a
:class:`ModelChanged` (JSON ``{"event": "push"|"rollback", "name", "version", "sha256"}``).
Code that follows a model calls :meth:`ModelRegistry.follow` (a :class:`ModelFollower`
thread), never the channel itself. Connection errors of every call surface as
:class:`procgraph.errors.BrokerUnavailable`.

Two modules: ``store`` (records, the event, the registry's calls) and ``follow`` (the
follower thread and its delivery rules). Import the names from ``procgraph.registry``.
"""

from procgraph.errors import ModelIntegrityError, ModelRegistryError
from procgraph.registry.follow import ModelFollower
from procgraph.registry.store import ModelChanged, ModelRecord, ModelRegistry, check_onnx_bytes

__all__ = [
    "ModelChanged",
    "ModelFollower",
    "ModelIntegrityError",
    "ModelRecord",
    "ModelRegistry",
    "ModelRegistryError",
    "check_onnx_bytes",
]
