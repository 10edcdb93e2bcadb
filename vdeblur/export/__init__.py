"""Checkpoint -> artifact: step/clip graphs with explicit state, ONNX, precision, engines."""
