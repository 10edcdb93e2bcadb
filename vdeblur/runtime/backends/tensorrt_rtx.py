"""TensorRT-RTX backend: an engine `vdeblur build --backend tensorrt-rtx` made, on an RTX GPU.

The state handling is the TensorRT backend's (:mod:`vdeblur.runtime.backends.tensorrt`: ping-pong
state buffers, pinned host copies, CUDA graphs per parity); this module differs in what it opens:

- the library is ``tensorrt_rtx`` and the CUDA side is cuda-python (:class:`CudaPythonApi`), both
  from wheels of the ``[tensorrt-rtx]`` extra (no CUDA toolkit, no pycuda);
- the engine comes from ``engines/tensorrt-rtx/<precision>/`` (:mod:`vdeblur.contract.engines`):
  the newest one built by this TensorRT-RTX version from one of the artifact's graphs of the
  precision (``trt`` or ``portable``) with this GPU's compute capability among its targets. The
  runtime never builds: without one, a BackendError names the `vdeblur build` command;
- the vdeblur IPluginV3 creators (:mod:`vdeblur.plugins.rtx`) are registered before the engine is
  deserialised: an RTX engine's plugin layers run their Python ``enqueue``, which launches the
  op's Triton kernel compiled to PTX for this GPU.

Neither tensorrt_rtx nor cuda-python is imported at module import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vdeblur.contract.engines import RTX_COMPUTE_CAPABILITIES
from vdeblur.errors import BackendError
from vdeblur.runtime.backends.tensorrt import EngineChoice, TensorRTBackend, open_engine
from vdeblur.runtime.backends.tensorrt import select_engine as _select_engine
from vdeblur.runtime.backends.tensorrt.cuda import CudaPythonApi

NAME = "tensorrt-rtx"


class TensorRTRtxBackend(TensorRTBackend):
    """A step graph on a TensorRT-RTX engine: :class:`TensorRTBackend`'s state handling."""

    name = NAME


def import_tensorrt_rtx() -> Any:
    """tensorrt_rtx, or an error naming the [tensorrt-rtx] extra (the one runtime -> plugins edge:
    the import also makes the library loadable, :func:`vdeblur.plugins.rtx.import_tensorrt_rtx`)."""
    from vdeblur.plugins.rtx import import_tensorrt_rtx as load

    return load("the TensorRT-RTX backend (on an NVIDIA RTX GPU)")


def select_engine(artifact: str | Path, precision: str = "fp32", shapes: Any = None, engine: str | Path | None = None,
                  *, trt_version: str | None = None, compute_capability: str | None = None) -> EngineChoice:
    """The TensorRT-RTX engine an artifact runs on (see
    :func:`vdeblur.runtime.backends.tensorrt.select_engine`); the runtime never builds one."""
    return _select_engine(artifact, precision, shapes, engine, trt_version=trt_version, backend=NAME,
                          compute_capability=compute_capability)


def open(artifact: str | Path, precision: str = "fp32", device: str = "auto",  # noqa: A001
         shapes: Any = None, cuda_graphs: bool = True, **options: Any) -> TensorRTRtxBackend:
    """Open ``artifact`` on TensorRT-RTX with an engine `vdeblur build --backend tensorrt-rtx` made.

    Arguments and options as :func:`vdeblur.runtime.backends.tensorrt.open` (``engine``,
    ``register_plugins``, ``copy_output``). Needs an NVIDIA GPU of a TensorRT-RTX compute capability
    (7.5, 8.0, 8.6, 8.9, 12.x) and the [tensorrt-rtx] extra.
    """
    def register() -> None:
        from vdeblur.plugins.lowering import register_tensorrt_rtx_plugins  # the runtime -> plugins edge

        register_tensorrt_rtx_plugins()

    def select(trt: Any, cuda: Any) -> EngineChoice:
        gpu = cuda.gpu()
        cc = str(gpu["compute_capability"])
        if options.get("engine") is None and cc not in RTX_COMPUTE_CAPABILITIES:
            raise BackendError(f"tensorrt-rtx backend: {gpu['name']} (compute capability {cc}) is not a TensorRT-RTX "
                               f"GPU. Expected one of compute capability {', '.join(RTX_COMPUTE_CAPABILITIES)}; "
                               "use --backend tensorrt on data-center GPUs.")
        return select_engine(artifact, precision, shapes, options.get("engine"),
                             trt_version=str(getattr(trt, "__version__", "")) or None, compute_capability=cc)

    return open_engine(artifact, precision, device, shapes, cuda_graphs, options, name=NAME,  # type: ignore[return-value]
                       import_trt=import_tensorrt_rtx,
                       make_cuda=lambda index, graphs: CudaPythonApi(index, graphs=graphs),
                       select=select, register=register, backend_class=TensorRTRtxBackend)
