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

from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.engines import (
    RTX_COMPUTE_CAPABILITIES,
    build_command,
    describe_sidecar,
    find_engine,
    format_shapes,
    list_engines,
    parse_shapes,
    shapes_text,
)
from vdeblur.contract.files import read_json
from vdeblur.errors import BackendError, UsageError
from vdeblur.runtime.backends.tensorrt import EngineChoice, TensorRTBackend, open_engine
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
    """The TensorRT-RTX engine an artifact runs on; the runtime never builds one.

    - ``engine`` given: that file (its ``.json`` sidecar beside it, if any);
    - otherwise the newest engine in ``engines/tensorrt-rtx/<precision>/`` built from one of the
      artifact's graphs of this precision, by this TensorRT-RTX version, for targets that include
      ``compute_capability`` (None: not checked), and with ``shapes`` one built for exactly those
      min/opt/max sizes. Raises BackendError naming the `vdeblur build` command when there is none.
    """
    if engine is not None:
        path = Path(engine)
        if not path.is_file():
            raise UsageError(f"{path}: no such engine file. Expected a serialized TensorRT-RTX engine (.plan), "
                             "e.g. from `vdeblur build ARTIFACT --backend tensorrt-rtx`.")
        return EngineChoice(path, "given", read_json(path.with_suffix(".json")))
    man = manifest_mod.read(artifact)
    shas = [g.sha256 for g in man.graphs if g.precision == precision]
    if not shas:
        man.graph(precision, "trt")  # raises: the artifact has no graph of this precision
    text = shapes_text(shapes)
    sizes = None if text is None else parse_shapes(text, int(man.interface["pad_multiple"]))
    found = find_engine(artifact, precision, shas, trt_version=trt_version, gpu=None, shapes=sizes, backend=NAME,
                        compute_capability=compute_capability)
    if found is not None:
        return EngineChoice(found[0], "cache", found[1])
    what = f"no TensorRT-RTX engine of its {precision} graph"
    if trt_version:
        what += f" built by TensorRT-RTX {trt_version}"
    if compute_capability:
        what += f" for compute capability {compute_capability}"
    if sizes:
        what += f" with the profile {format_shapes(sizes)}"
    others = list_engines(artifact, precision, NAME)
    have = ""
    if others:
        listed = "; ".join(describe_sidecar(m) for m in others[:3]) + ("; ..." if len(others) > 3 else "")
        have = f" (it has {len(others)} other{'s' if len(others) > 1 else ''}: {listed})"
    command = build_command(artifact, NAME, precision, text)
    if compute_capability:
        command += f" --compute-capability {compute_capability}"
    raise BackendError(f"{artifact}: has {what}{have}. The runtime does not build engines: build one (on any "
                       f"machine) with `{command}`, or pass engine=PATH.")


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
