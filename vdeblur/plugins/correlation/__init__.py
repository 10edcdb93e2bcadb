"""The `vdeblur::correlation` op: reference, Triton kernel, custom op, ONNX lowerings, TensorRT plugin."""
