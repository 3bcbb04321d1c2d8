"""livegen: real-time MIDI accompaniment with ONNX models."""

__version__ = "0.1.0"
