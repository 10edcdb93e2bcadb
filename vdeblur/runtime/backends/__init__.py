"""Backends: one protocol (base.Backend), opened by name with :func:`open_backend`.

``torch``        the PyTorch reference modules (imports torch; the reference)
``onnxruntime``  the portable ONNX on ONNX Runtime (IOBinding; states stay in OrtValues)
``tensorrt``     the TensorRT engine with the AOT plugins (pycuda; ping-pong state buffers)
``tensorrt-rtx`` the TensorRT-RTX engine with the IPluginV3 plugins (cuda-python; the same state handling)
"""

from vdeblur.runtime.backends.base import BACKENDS, Backend, open_backend

__all__ = ["BACKENDS", "Backend", "open_backend"]
