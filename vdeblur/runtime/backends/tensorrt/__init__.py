"""TensorRT backend: the engine of the ``trt``-lowered graph with the vdeblur AOT plugins.

:func:`open` finds the engine in the artifact's engine cache (:mod:`vdeblur.contract.engines`) and
never builds one: without a fitting engine it raises a BackendError naming the `vdeblur build`
command. Memory and streams come from pycuda (the ``[tensorrt]`` extra); CUDA graphs go through the
CUDA driver library with ctypes, because pycuda has no graph API. Neither torch nor tensorrt nor
pycuda is imported at module import; :func:`open` imports them and raises an error naming the
``[tensorrt]`` extra (and the NVIDIA GPU it needs) when one is missing.

How a step runs (``step(frame, flush)``), per stream of (N, 3, Hp, Wp) frames:

- **State without copies (ping-pong).** Every state tensor has two device buffers, slot 0 and
  slot 1. ``reset`` writes the initial value (memset, or one upload) into slot 0. Step k binds the
  state inputs to slot k % 2 and the state outputs to slot (k + 1) % 2 with
  ``set_tensor_address``: the outputs of step k are the inputs of step k + 1, no state byte is
  ever copied, and an output never aliases the input it is computed from. A step that fails
  leaves the state it read untouched.
- **Host copies.** Only the frame (pinned host -> device) and the output frame (device -> pinned
  host) cross the bus, on one non-blocking stream; the pinned buffers and every device buffer
  are allocated at ``reset`` and reused until the frame size changes. The flush flag input (when
  the manifest has one) is a device buffer written only when its value changes.
- **CUDA graphs** (``cuda_graphs=True``). One graph per ping-pong parity and frame size: the first
  step of each parity runs ``execute_async_v3`` plainly (the warm-up TensorRT asks for before a
  capture), the second captures it and launches the graph, later ones launch the graph. A reset
  to a new size frees the buffers and drops the graphs; a failed capture turns graphs off for the
  backend with a warning and the step runs plainly (as trtexec does).

Modules: :mod:`.plan` (state plan, fills, input shapes, checks: plain Python), :mod:`.buffers`
(ping-pong schedule, CUDA-graph cache), :mod:`.cuda` (the :class:`CudaApi` interface, pycuda and
libcuda), :mod:`.backend` (:class:`TensorRTBackend`); this one selects the engine and opens it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdeblur.contract import manifest as manifest_mod
from vdeblur.contract.engines import (
    build_command,
    choose_cached_engine,
    describe_sidecar,
    find_engine,
    format_shapes,
    list_engines,
    parse_shapes,
    shapes_text,
)
from vdeblur.contract.files import read_json
from vdeblur.contract.precision import PRECISIONS
from vdeblur.errors import BackendError, UsageError
from vdeblur.runtime.backends.base import Interface
from vdeblur.runtime.backends.tensorrt.backend import NAME, TensorRTBackend, engine_info, import_tensorrt
from vdeblur.runtime.backends.tensorrt.buffers import GraphCache, GraphKey, PingPong
from vdeblur.runtime.backends.tensorrt.cuda import (
    CudaApi,
    CudaPythonApi,
    DriverGraphs,
    PyCudaApi,
    import_cuda_python,
    import_pycuda,
)
from vdeblur.runtime.backends.tensorrt.plan import (
    EngineInfo,
    Fill,
    StatePlan,
    TensorInfo,
    check_feeds,
    check_frame,
    check_io,
    check_profile,
    check_size,
    fill_pattern,
    input_shapes,
    parse_device,
    plan_states,
)

__all__ = ["NAME", "OPTIONS", "CudaApi", "CudaPythonApi", "DriverGraphs", "EngineChoice", "EngineInfo", "Fill",
           "GraphCache", "GraphKey", "PingPong", "PyCudaApi", "StatePlan", "TensorInfo", "TensorRTBackend",
           "check_feeds", "check_frame", "check_io", "check_profile", "check_size", "choose_cached_engine",
           "engine_info", "fill_pattern", "import_cuda_python", "import_pycuda", "import_tensorrt", "input_shapes",
           "open", "open_engine", "parse_device", "plan_states", "select_engine"]

OPTIONS = ("engine", "register_plugins", "copy_output")


@dataclass(frozen=True)
class EngineChoice:
    """The engine file to deserialise; source: ``given`` | ``cache``; meta: its sidecar."""

    path: Path
    source: str
    meta: dict[str, Any] | None = None


_ENGINE_NAMES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}


def select_engine(artifact: str | Path, precision: str = "fp32", shapes: Any = None, engine: str | Path | None = None,
                  *, trt_version: str | None = None, gpu: Mapping[str, Any] | None = None,
                  backend: str = "tensorrt", compute_capability: str | None = None) -> EngineChoice:
    """The engine an artifact runs on; the runtime never builds one.

    - ``engine`` given: that file (its ``.json`` sidecar beside it, if any);
    - otherwise the newest ``backend`` engine (tensorrt | tensorrt-rtx) cached in the artifact for this
      precision, built from one of its graphs of this precision (TensorRT: the trt lowering), by this
      TensorRT(-RTX) version, for this GPU (TensorRT) or for targets that include
      ``compute_capability`` (TensorRT-RTX) (None: not checked), and with ``shapes`` ("HxW:HxW:HxW"
      or three (h, w) pairs) one built for exactly those min/opt/max sizes (padded to the manifest's
      multiple). Raises BackendError naming the `vdeblur build` command when the cache has none.
    """
    what_engine = _ENGINE_NAMES[backend]
    if engine is not None:
        path = Path(engine)
        if not path.is_file():
            raise UsageError(f"{path}: no such engine file. Expected a serialized {what_engine} engine (.plan), "
                             f"e.g. from `vdeblur build ARTIFACT --backend {backend}`.")
        return EngineChoice(path, "given", read_json(path.with_suffix(".json")))
    man = manifest_mod.read(artifact)
    if backend == "tensorrt":
        shas: str | list[str] = man.graph(precision, "trt").sha256
    else:
        shas = [g.sha256 for g in man.graphs if g.precision == precision]
        if not shas:
            man.graph(precision, "trt")  # raises: the artifact has no graph of this precision
    text = shapes_text(shapes)
    sizes = None if text is None else parse_shapes(text, int(man.interface["pad_multiple"]))
    found = find_engine(artifact, precision, shas, trt_version=trt_version, gpu=gpu, shapes=sizes, backend=backend,
                        compute_capability=compute_capability)
    if found is not None:
        return EngineChoice(found[0], "cache", found[1])
    what = f"no {what_engine} engine of its {precision} graph"
    if trt_version:
        what += f" built by {what_engine} {trt_version}"
    if gpu:
        what += f" for {gpu.get('name')} (sm {gpu.get('compute_capability')})"
    if compute_capability:
        what += f" for compute capability {compute_capability}"
    if sizes:
        what += f" with the profile {format_shapes(sizes)}"
    others = list_engines(artifact, precision, backend)
    have = ""
    if others:
        listed = "; ".join(describe_sidecar(m) for m in others[:3]) + ("; ..." if len(others) > 3 else "")
        have = f" (it has {len(others)} other{'s' if len(others) > 1 else ''}: {listed})"
    command = build_command(artifact, backend, precision, text)
    where = "on this machine"
    if backend == "tensorrt-rtx":
        where = "(on any machine)"
        if compute_capability:
            command += f" --compute-capability {compute_capability}"
    raise BackendError(f"{artifact}: has {what}{have}. The runtime does not build engines: build one {where} "
                       f"with `{command}`, or pass engine=PATH.")


def open(artifact: str | Path, precision: str = "fp32", device: str = "auto",  # noqa: A001
         shapes: Any = None, cuda_graphs: bool = True, **options: Any) -> TensorRTBackend:
    """Open ``artifact`` on TensorRT with an engine `vdeblur build` made.

    precision: the artifact's graph to run (its ``trt`` lowering); device: auto | cuda | cuda:N;
    shapes: "HxW:HxW:HxW" min:opt:max frame sizes of the engine's profile, to pick among cached
    engines (None: the newest fitting one; see :func:`select_engine`); cuda_graphs: capture and
    replay CUDA graphs (falls back to plain launches when capture fails).
    options: ``engine`` (path of a serialized engine to use as is), ``register_plugins`` (True:
    register the vdeblur plugins before deserialising), ``copy_output`` (True: step returns a copy).
    """
    def register() -> None:
        # The engine's plugin layers need their creators: the one runtime -> plugins edge
        # (``import vdeblur.plugins`` is torch-free).
        from vdeblur.plugins.lowering import register_tensorrt_plugins

        register_tensorrt_plugins()

    def select(trt: Any, cuda: Any) -> EngineChoice:
        return select_engine(artifact, precision, shapes, options.get("engine"),
                             trt_version=str(getattr(trt, "__version__", "")) or None, gpu=cuda.gpu())

    return open_engine(artifact, precision, device, shapes, cuda_graphs, options, name=NAME,
                       import_trt=import_tensorrt, make_cuda=lambda index, graphs: PyCudaApi(index, graphs=graphs),
                       select=select, register=register, backend_class=TensorRTBackend)


def open_engine(artifact: str | Path, precision: str, device: str, shapes: Any, cuda_graphs: bool,
                options: dict[str, Any], *, name: str, import_trt: Callable[[], Any],
                make_cuda: Callable[[int, bool], Any], select: Callable[[Any, Any], EngineChoice],
                register: Callable[[], None], backend_class: type[TensorRTBackend]) -> TensorRTBackend:
    """What opening a TensorRT or TensorRT-RTX engine takes: check the arguments, import the
    library (``import_trt``), make the CUDA side (``make_cuda(index, graphs)``), pick the engine
    (``select(trt, cuda)``), register the plugins (``register``, unless ``register_plugins=False``),
    deserialise it in the device's context and wrap it in ``backend_class``; the CUDA side is
    released when any step fails."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"{name} backend: options {unknown} are unknown. Expected some of {list(OPTIONS)}.")
    if precision not in PRECISIONS:
        raise UsageError(f"{name} backend: precision {precision!r} is unknown. "
                         f"Expected one of {', '.join(PRECISIONS)}.")
    index = parse_device(device)
    iface = Interface(artifact)
    trt = import_trt()
    cuda = make_cuda(index, cuda_graphs)
    try:
        choice = select(trt, cuda)
        if options.get("register_plugins", True):
            register()
        logger = trt.Logger(trt.Logger.WARNING)
        with cuda.activate():
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(choice.path.read_bytes())
        if engine is None:
            library = "TensorRT-RTX" if name == "tensorrt-rtx" else "TensorRT"
            raise BackendError(f"{choice.path}: {library} cannot deserialize this engine (see the {library} log "
                               f"above). Expected an engine built by this {library} version for this GPU; rebuild it "
                               f"with `{build_command(artifact, name, precision, shapes_text(shapes))}`.")
        graphs = cuda_graphs and cuda.graph_error is None
        backend = backend_class(iface, engine, engine_info(trt, engine), cuda, cuda_graphs=graphs,
                                copy_output=bool(options.get("copy_output", True)), keep=[runtime, logger],
                                engine_path=choice.path, precision=precision, device=index,
                                engine_source=choice.source, engine_meta=choice.meta)
        if cuda_graphs and cuda.graph_error is not None:
            backend._graphs.disabled_reason = cuda.graph_error
    except BaseException:
        cuda.close()
        raise
    return backend
