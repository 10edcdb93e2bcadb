"""The `vdeblur::FlowWarp` op: reference, Triton kernel, custom op, ONNX lowerings, TensorRT plugin.

This package module stays free of torch (the TensorRT plugin registration imports it).
"""

OP_ID = "vdeblur::FlowWarp"
PADDING_MODES = ("zeros", "border")
