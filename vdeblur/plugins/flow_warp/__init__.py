"""The `vdeblur::flow_warp` op: reference, Triton kernel, custom op, ONNX lowerings, TensorRT plugin."""
