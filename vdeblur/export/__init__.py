"""Checkpoint -> artifact: step graphs with explicit state, ONNX export and validation, precision variants."""
