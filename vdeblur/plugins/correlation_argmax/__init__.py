"""The `vdeblur::correlation_argmax` op: reference, Triton kernel, custom op, ONNX lowerings, TensorRT plugin."""
