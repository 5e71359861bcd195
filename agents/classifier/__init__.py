"""procgraph built-in classifier agents.

- ``agent.py``: :class:`OnnxClassifier` (params, setup/teardown, batches in, verdicts out);
- ``session.py``: one ONNX model in onnxruntime (providers, input discovery,
  pre-processing, inference, softmax);
- ``follow.py``: following ``registry:NAME`` through ``procgraph.registry`` and the swap
  between batches.
"""

from procgraph.agents.classifier.agent import OnnxClassifier

__all__ = ["OnnxClassifier"]
