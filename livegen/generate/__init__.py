"""One module per model kind: turn a phrase roll into generated tracks with an ONNX session."""
