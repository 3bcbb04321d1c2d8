"""Checkpoint -> ONNX under the livegen model contract, with a parity check against torch."""
