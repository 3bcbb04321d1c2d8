"""Training side of livegen: data, the three models in torch, training loops, evaluation.

Nothing in here is imported by the `livegen` runtime; the seam between the two is the
ONNX model contract (see `export/`).
"""
