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

Nothing unchecked becomes current: a push is refused unless onnxruntime loads the bytes,
they fit in one broker value (``proto-max-bulk-len``), an optional ``check`` (an agent's
``check_model``) accepts them and their inputs and outputs are those of the current version.
The bytes travel in chunks (with progress) into a temporary key renamed at commit.

Four modules: ``check`` (is this a sane ONNX file or model: :func:`check_model_file`,
:func:`read_model_file`, :func:`inspect_model`), ``records`` (a version's record, the
event), ``store`` (the registry's calls) and ``follow`` (the follower thread and its
delivery rules). Import the names from ``procgraph.registry``.

An agent class that follows a model may define ``check_model(params, data) -> None``
(a classmethod raising ValueError when the model does not suit those params):
``procgraph model push --graph G`` calls it for every agent of G following the model.
"""

from procgraph.errors import ModelIntegrityError, ModelRegistryError
from procgraph.registry.check import (
    MAX_MODEL_BYTES,
    ModelSignature,
    TensorSpec,
    check_model_file,
    check_onnx_bytes,
    inspect_model,
    read_model_file,
)
from procgraph.registry.follow import ModelFollower
from procgraph.registry.records import ModelChanged, ModelRecord
from procgraph.registry.store import CHUNK_BYTES, ModelRegistry

__all__ = [
    "CHUNK_BYTES",
    "MAX_MODEL_BYTES",
    "ModelChanged",
    "ModelFollower",
    "ModelIntegrityError",
    "ModelRecord",
    "ModelRegistry",
    "ModelRegistryError",
    "ModelSignature",
    "TensorSpec",
    "check_model_file",
    "check_onnx_bytes",
    "inspect_model",
    "read_model_file",
]
