"""procgraph built-in classifier agents."""

from procgraph.agents.classifier.onnx import OnnxClassifier

__all__ = ["OnnxClassifier"]
