"""The `vdeblur::CorrelationArgmax` op: reference, Triton kernel, custom op, ONNX lowerings, TensorRT plugin.

This package module stays free of torch (the TensorRT plugin registration imports it).
"""

OP_ID = "vdeblur::CorrelationArgmax"
