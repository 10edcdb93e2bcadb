"""TensorRT backend: the engine of the ``trt``-lowered graph with the vdeblur AOT plugins.

Memory and streams come from pycuda (the ``[tensorrt]`` extra); CUDA graphs go through the CUDA
driver library (``libcuda``) with ctypes, because pycuda has no graph API. Neither torch nor
tensorrt nor pycuda is imported at module import; :func:`open` imports them and raises an error
naming the ``[tensorrt]`` extra (and the NVIDIA GPU it needs) when one is missing.

How a step runs (``step(frame, flush)``), per stream of (N, 3, Hp, Wp) frames:

- **State without copies (ping-pong).** Every state tensor has two device buffers, slot 0 and
  slot 1. :meth:`TensorRTBackend.reset` writes the initial value (memset, or one upload) into
  slot 0. Step k binds the state inputs to slot k % 2 and the state outputs to slot (k + 1) % 2
  with ``set_tensor_address``: the outputs of step k are the inputs of step k + 1, no state byte
  is ever copied, and an output never aliases the input it is computed from (:class:`PingPong`).
  A step that fails leaves the state it read untouched.
- **Host copies.** Only the frame (pinned host -> device) and the output frame (device -> pinned
  host) cross the bus, on one non-blocking stream; the pinned buffers and every device buffer
  are allocated at ``reset`` and reused until the frame size changes. The flush flag input (when
  the manifest has one) is a device buffer written only when its value changes.
- **CUDA graphs** (``cuda_graphs=True``). A graph fixes the tensor addresses it was captured
  with, and the addresses alternate with the ping-pong parity, so there is one graph per parity
  and frame size (:class:`GraphCache`, key (parity, shapes)). The first step of each parity runs
  ``execute_async_v3`` plainly (the warm-up TensorRT asks for before a capture), the second
  captures it and launches the graph, later ones launch the graph. A reset to a new size frees
  the buffers and drops the graphs; a failed capture turns graphs off for the backend with a
  warning and the step runs plainly (as trtexec does).

Everything that does not need TensorRT or CUDA (state plan, fills, ping-pong schedule, graph
cache, frame/profile/IO checks, device parsing, engine selection) is a plain function or class
here and is tested without them; the CUDA calls sit behind the small :class:`CudaApi` interface
(:class:`PyCudaApi` on a real GPU).

Not thread-safe: one backend serves one stream from one thread at a time (the CUDA context is
pushed around every call, so that thread may change between calls).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from vdeblur.errors import BackendError, ShapeError, UsageError, missing_dependency
from vdeblur.export.manifest import PRECISIONS

NAME = "tensorrt"
OPTIONS = ("engine", "register_plugins", "copy_output")
_DIM = re.compile(r"^(N|Hp|Wp)(?:/([1-9][0-9]*))?$")  # the StateSpec shape grammar (export/stepgraph.py)
_DEVICE = re.compile(r"^(?:cuda|gpu)(?::([0-9]+))?$")
_NEEDS = ("Install the extra with `pip install 'vdeblur[tensorrt]'` on a machine with an NVIDIA GPU and its driver, "
          "or use --backend onnxruntime.")

Shape = tuple[int, ...]


# --------------------------------------------------------------------------------------------
# State buffer plan: concrete shapes, dtypes, bytes and initial fills (plain Python)
# --------------------------------------------------------------------------------------------


def resolve_dim(dim: int | str, n: int, hp: int, wp: int, subject: str = "state") -> int:
    """One dimension of a manifest shape: an int, or ``N`` / ``Hp`` / ``Wp`` optionally ``/k``."""
    if isinstance(dim, int) and not isinstance(dim, bool):
        return dim
    m = _DIM.match(str(dim))
    if m is None:
        raise BackendError(f"manifest: {subject} dimension {dim!r} is not understood. "
                           "Expected an int, N, Hp, Wp or Hp/k; re-export the artifact.")
    value = {"N": n, "Hp": hp, "Wp": wp}[m.group(1)]
    k = int(m.group(2) or 1)
    if value % k:
        raise ShapeError(f"{subject}: {m.group(1)}={value} is not divisible by {k}. "
                         f"Expected frames padded to a multiple of {k} (see the manifest's pad_multiple).")
    return value // k


@dataclass(frozen=True)
class Fill:
    """How to write a state's initial value on the device.

    kind: ``memset8`` / ``memset16`` / ``memset32`` (``value`` is the bit pattern, ``count`` the
    number of 1/2/4-byte elements) or ``copy`` (upload ``array``)."""

    kind: str
    value: int = 0
    count: int = 0
    array: np.ndarray | None = None


def fill_pattern(shape: Shape, dtype: np.dtype, initial: float, subject: str = "state") -> Fill:
    """The cheapest way to fill a (shape, dtype) buffer with ``initial``: zeros and 1/2/4-byte
    dtypes are a memset of the value's bit pattern; anything else is an upload of a host array."""
    dtype = np.dtype(dtype)
    value = np.asarray(initial).astype(dtype)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        if float(value) != float(initial):
            raise BackendError(f"manifest: {subject} has initial value {initial!r}, which {dtype} cannot hold. "
                               "Expected an integral value; re-export the artifact.")
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    raw = value.tobytes()
    if not any(raw):
        return Fill("memset8", 0, nbytes)
    bits = {1: np.uint8, 2: np.uint16, 4: np.uint32}.get(dtype.itemsize)
    if bits is None:
        return Fill("copy", array=np.full(shape, initial, dtype=dtype))
    return Fill(f"memset{8 * dtype.itemsize}", int(np.frombuffer(raw, dtype=bits)[0]), count)


@dataclass(frozen=True)
class StatePlan:
    """One state tensor at a concrete frame size: its two device buffers hold ``shape`` x ``dtype``."""

    input_name: str
    output_name: str
    shape: Shape
    dtype: np.dtype
    initial: float

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def fill(self) -> Fill:
        return fill_pattern(self.shape, self.dtype, self.initial, f"state {self.input_name!r}")

    def initial_array(self) -> np.ndarray:
        return np.full(self.shape, self.initial, dtype=self.dtype)


def plan_states(interface: Mapping[str, Any], batch: int, height: int, width: int,
                dtypes: Mapping[str, Any] | None = None) -> list[StatePlan]:
    """The state buffers of a stream of (batch, 3, height, width) padded frames, in manifest order.

    interface: the manifest's ``interface`` (StepSpec.to_dict()); dtypes: input name -> dtype to
    use instead of the manifest's (the engine's own tensor types)."""
    plans = []
    for s in interface["states"]:
        name = s["input_name"]
        shape = tuple(resolve_dim(d, batch, height, width, f"state {name!r}") for d in s["shape"])
        dtype = np.dtype((dtypes or {}).get(name, s["dtype"]))
        plans.append(StatePlan(name, s["output_name"], shape, dtype, float(s["initial"])))
    return plans


def input_shapes(interface: Mapping[str, Any], batch: int, height: int, width: int) -> dict[str, Shape]:
    """Concrete shape of every step input: frame (N, 3, Hp, Wp), flush flag (N,), the states."""
    shapes: dict[str, Shape] = {interface["frame_input"]: (batch, 3, height, width)}
    flag = (interface.get("flush") or {}).get("flag_input")
    if flag:
        shapes[flag] = (batch,)
    for p in plan_states(interface, batch, height, width):
        shapes[p.input_name] = p.shape
    return shapes


# --------------------------------------------------------------------------------------------
# Ping-pong schedule and CUDA-graph cache (plain Python)
# --------------------------------------------------------------------------------------------


class PingPong:
    """Which of its two buffers each state input and output binds to at each step.

    pairs: (input name, output name) per state; slots: the two buffer addresses of each state.
    At step k the inputs read slot k % 2 and the outputs write slot (k + 1) % 2, so the state
    always lives in slot ``parity`` before a step and moves to the other slot during it.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], slots: Sequence[tuple[int, int]]) -> None:
        if len(pairs) != len(slots):
            raise ValueError(f"PingPong: {len(pairs)} states but {len(slots)} buffer pairs")
        for a, b in slots:
            if a == b:
                raise ValueError(f"PingPong: both slots of a state are the buffer {a:#x}")
        self.pairs = [tuple(p) for p in pairs]
        self.slots = [tuple(s) for s in slots]
        self.step = 0

    @property
    def parity(self) -> int:
        """0 or 1: the slot the current state lives in (and the CUDA graph to use)."""
        return self.step % 2

    def bindings(self, step: int | None = None) -> dict[str, int]:
        """{tensor name: address} of every state input and output at ``step`` (default: the next)."""
        k = self.step if step is None else step
        read, write = k % 2, (k + 1) % 2
        out: dict[str, int] = {}
        for (inp, outp), pair in zip(self.pairs, self.slots, strict=True):
            out[inp] = pair[read]
            out[outp] = pair[write]
        return out

    def current(self) -> dict[str, int]:
        """{state input name: address of the buffer holding its current value}."""
        return {inp: pair[self.parity] for (inp, _), pair in zip(self.pairs, self.slots, strict=True)}

    def advance(self) -> None:
        self.step += 1

    def reset(self) -> None:
        """Back to step 0: the state lives in slot 0 (where the initial values are written)."""
        self.step = 0


class GraphKey(NamedTuple):
    parity: int
    shapes: tuple[tuple[str, Shape], ...]


class GraphCache:
    """CUDA graphs of ``execute_async_v3``, one per (ping-pong parity, input shapes).

    :meth:`action` says what the next step with a key does: ``plain`` (the warm-up launch, or
    graphs off), ``capture`` (capture, then launch the new graph) or ``launch`` (the cached
    graph). ``release`` is called on every graph dropped (invalidation, disabling, clearing).
    """

    def __init__(self, enabled: bool = True, release: Callable[[Any], None] | None = None) -> None:
        self.enabled = enabled
        self.disabled_reason: str | None = None if enabled else "turned off (cuda_graphs=False)"
        self._release = release or (lambda graph: None)
        self._graphs: dict[GraphKey, Any] = {}
        self._warm: set[GraphKey] = set()

    @staticmethod
    def key(parity: int, shapes: Mapping[str, Sequence[int]]) -> GraphKey:
        return GraphKey(int(parity), tuple((name, tuple(int(d) for d in s)) for name, s in sorted(shapes.items())))

    def action(self, key: GraphKey) -> str:
        if not self.enabled:
            return "plain"
        if key in self._graphs:
            return "launch"
        return "capture" if key in self._warm else "plain"

    def warmed(self, key: GraphKey) -> None:
        """A plain launch with ``key`` ran: the next one may capture."""
        if self.enabled:
            self._warm.add(key)

    def store(self, key: GraphKey, graph: Any) -> None:
        old = self._graphs.pop(key, None)
        if old is not None:
            self._release(old)
        self._graphs[key] = graph

    def get(self, key: GraphKey) -> Any:
        return self._graphs[key]

    def __len__(self) -> int:
        return len(self._graphs)

    def keys(self) -> list[GraphKey]:
        return list(self._graphs)

    def invalidate(self, shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        """Drop the graphs (and warm-ups) made for other shapes than ``shapes`` (all when None):
        called when the buffers they captured are freed."""
        keep = None if shapes is None else self.key(0, shapes).shapes
        for k in [k for k in self._graphs if k.shapes != keep]:
            self._release(self._graphs.pop(k))
        self._warm = {k for k in self._warm if k.shapes == keep}

    def disable(self, reason: str) -> None:
        """Capture failed: drop every graph and run plain launches from now on."""
        self.clear()
        self.enabled = False
        self.disabled_reason = reason

    def clear(self) -> None:
        for graph in self._graphs.values():
            self._release(graph)
        self._graphs.clear()
        self._warm.clear()


# --------------------------------------------------------------------------------------------
# Checks (plain Python)
# --------------------------------------------------------------------------------------------


def parse_device(device: str) -> int:
    """``auto`` | ``cuda`` | ``cuda:N`` -> the CUDA device index."""
    text = str(device).strip().lower()
    if text == "auto":
        return 0
    if text == "cpu":
        raise BackendError("tensorrt backend: device 'cpu' is not supported. TensorRT runs on an NVIDIA GPU; "
                           "use --backend onnxruntime on the CPU.")
    m = _DEVICE.match(text)
    if m is None:
        raise UsageError(f"tensorrt backend: device {device!r} is unknown. Expected auto, cuda or cuda:N.")
    return int(m.group(1) or 0)


def check_size(batch: int, height: int, width: int, pad_multiple: int) -> None:
    """reset() arguments: positive ints, height and width multiples of ``pad_multiple``."""
    for name, value in (("batch", batch), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"tensorrt reset: {name} {value!r} is not a positive integer. "
                             "Expected reset(batch, height, width) with the padded frame size.")
    if height % pad_multiple or width % pad_multiple:
        raise ShapeError(f"tensorrt reset: frame size {height}x{width} is not a multiple of {pad_multiple}. "
                         f"Expected the padded size (pad frames to multiples of {pad_multiple}, or use Stream).")


def check_frame(frame: Any, pad_multiple: int, expected: Shape | None = None) -> np.ndarray:
    """A step frame: a float32 ndarray (N, 3, Hp, Wp), Hp and Wp multiples of ``pad_multiple``.

    expected: the (N, 3, Hp, Wp) of the current stream, if any; a different size is allowed (the
    backend resets for it), so it only shapes the messages."""
    if not isinstance(frame, np.ndarray):
        raise ShapeError(f"tensorrt step: frame is a {type(frame).__name__}, not a numpy array. "
                         "Expected a float32 array (N, 3, Hp, Wp) in [0, 1].")
    if frame.ndim != 4 or frame.shape[1] != 3:
        want = f"{expected}" if expected else "(N, 3, Hp, Wp)"
        raise ShapeError(f"tensorrt step: frame has shape {tuple(frame.shape)}. Expected {want}: NCHW RGB.")
    if frame.dtype != np.float32:
        raise ShapeError(f"tensorrt step: frame has dtype {frame.dtype}. Expected float32 in [0, 1] "
                         "(convert with frame.astype(np.float32)).")
    n, _, h, w = frame.shape
    if n < 1 or h < 1 or w < 1 or h % pad_multiple or w % pad_multiple:
        raise ShapeError(f"tensorrt step: frame is {h}x{w} (batch {n}). Expected a non-empty frame whose height and "
                         f"width are multiples of {pad_multiple} (pad it, or use Stream).")
    return frame


def check_profile(name: str, shape: Sequence[int], profile: tuple[Sequence[int], Sequence[int], Sequence[int]] | None
                  ) -> None:
    """``shape`` within the engine's optimisation profile (min, opt, max) of input ``name``."""
    if profile is None:
        return
    lo, _, hi = (tuple(int(d) for d in s) for s in profile)
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(lo) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi, strict=True)):
        raise ShapeError(f"tensorrt engine: input {name!r} of shape {shape} is outside the engine's optimisation "
                         f"profile (min {lo}, max {hi}). Rebuild the engine for this size "
                         "(`vdeblur build --backend tensorrt --shapes MIN:OPT:MAX`, or open(..., shapes=...)).")


@dataclass(frozen=True)
class TensorInfo:
    """One I/O tensor of an engine (shape: -1 for dynamic dims; profile: (min, opt, max) of inputs)."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: Shape = ()
    profile: tuple[Shape, Shape, Shape] | None = None


@dataclass
class EngineInfo:
    """The I/O tensors of an engine, by name (from :func:`engine_info`, or written by hand in tests)."""

    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return [n for n, t in self.tensors.items() if t.is_input]

    @property
    def outputs(self) -> list[str]:
        return [n for n, t in self.tensors.items() if not t.is_input]

    def dtype(self, name: str) -> np.dtype:
        return self.tensors[name].dtype


def check_io(interface: Mapping[str, Any], info: EngineInfo, subject: str = "tensorrt engine") -> None:
    """The engine's tensors are the manifest's step interface; ping-pong pairs share a dtype."""
    problems = []
    want_in, want_out = list(interface["input_names"]), list(interface["output_names"])
    if sorted(info.inputs) != sorted(want_in):
        problems.append(f"its inputs are {sorted(info.inputs)}, the manifest's {sorted(want_in)}")
    if sorted(info.outputs) != sorted(want_out):  # every output needs a bound buffer
        problems.append(f"its outputs are {sorted(info.outputs)}, the manifest's {sorted(want_out)}")
    if not problems:
        for s in interface["states"]:
            a, b = info.dtype(s["input_name"]), info.dtype(s["output_name"])
            if a != b:
                problems.append(f"state {s['input_name']!r} is {a} but {s['output_name']!r} is {b}")
        for name in (interface["frame_input"], interface["frame_output"]):
            if info.dtype(name).kind != "f":
                problems.append(f"frame tensor {name!r} is {info.dtype(name)}")
    if problems:
        raise BackendError(f"{subject}: does not match the artifact ({'; '.join(problems)}). Expected the engine of "
                           "this artifact's trt graph; rebuild it with `vdeblur build --backend tensorrt`.")


def check_feeds(feeds: Mapping[str, Any], info: EngineInfo) -> dict[str, np.ndarray]:
    """run() feeds: every engine input, nothing else, each in the engine's dtype (C-contiguous)."""
    if not isinstance(feeds, Mapping):
        raise UsageError(f"tensorrt run: feeds is a {type(feeds).__name__}. Expected a dict name -> numpy array.")
    missing = [n for n in info.inputs if n not in feeds]
    unknown = [n for n in feeds if n not in info.tensors or not info.tensors[n].is_input]
    if missing or unknown:
        raise UsageError(f"tensorrt run: feeds miss {missing} and have unknown {unknown}. "
                         f"Expected exactly the inputs {info.inputs}.")
    out = {}
    for name in info.inputs:
        arr = np.asarray(feeds[name])
        want = info.dtype(name)
        if arr.dtype != want:
            raise ShapeError(f"tensorrt run: input {name!r} has dtype {arr.dtype}. Expected {want} "
                             f"(convert with .astype(np.{want.name})).")
        out[name] = np.ascontiguousarray(arr)
    return out


# --------------------------------------------------------------------------------------------
# Engine selection (calls into vdeblur.export.engines)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineChoice:
    """The engine file to deserialise; source: ``given`` | ``cache`` | ``built``; meta: its sidecar."""

    path: Path
    source: str
    meta: dict[str, Any] | None = None


def choose_cached_engine(sidecars: Sequence[Mapping[str, Any]], precision: str, onnx_sha256: str,
                         trt_version: str | None, gpu: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The newest cached engine (``engines.list_engines`` sidecars) made from this ONNX at this
    precision, by this TensorRT version for this GPU (None when unknown: not checked)."""
    fits = []
    for meta in sidecars:
        if meta.get("precision") != precision or (meta.get("onnx") or {}).get("sha256") != onnx_sha256:
            continue
        if trt_version is not None and str(meta.get("tensorrt")) != str(trt_version):
            continue
        if gpu is not None and meta.get("gpu") != dict(gpu):
            continue
        fits.append(meta)
    return max(fits, key=lambda m: str(m.get("created", ""))) if fits else None


def select_engine(artifact: str | Path, precision: str = "fp32", shapes: Any = None, engine: str | Path | None = None,
                  *, trt_version: str | None = None, gpu: Mapping[str, Any] | None = None) -> EngineChoice:
    """The engine an artifact runs on.

    - ``engine`` given: that file (its ``.json`` sidecar beside it, if any);
    - no ``shapes``: the newest engine cached in the artifact for this precision, ONNX, TensorRT
      version and GPU, when there is one (a custom ``vdeblur build --shapes`` is reused);
    - otherwise ``engines.build(artifact, "tensorrt", precision, shapes)`` (a cache hit when the
      key matches; None shapes = the default profile).
    """
    from vdeblur.export import engines

    if engine is not None:
        path = Path(engine)
        if not path.is_file():
            raise UsageError(f"{path}: no such engine file. Expected a serialized TensorRT engine (.plan), "
                             "e.g. from `vdeblur build --backend tensorrt`.")
        return EngineChoice(path, "given", _read_json(path.with_suffix(".json")))
    if shapes is None:
        from vdeblur.export import manifest as manifest_mod

        sha = manifest_mod.read(artifact).graph(precision, "trt").sha256
        meta = choose_cached_engine(engines.list_engines(artifact), precision, sha, trt_version, gpu)
        if meta is not None:
            cached = Path(artifact) / engines.ENGINES / "tensorrt" / str(meta["engine"])
            return EngineChoice(cached, "cache", dict(meta))
    result = engines.build(artifact, "tensorrt", precision, shapes)
    built = result.get("engine")
    if not built or not Path(built).is_file():
        raise BackendError(f"{artifact}: the TensorRT build returned no engine file ({built!r}). "
                           "Expected engines.build to write one; see `vdeblur build --backend tensorrt`.")
    sidecar = result.get("sidecar")
    return EngineChoice(Path(built), "cache" if result.get("cache_hit") else "built",
                        _read_json(Path(sidecar)) if sidecar else None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------
# CUDA: the calls the backend makes, behind one small interface
# --------------------------------------------------------------------------------------------


class CudaApi(Protocol):
    """Device memory, one stream and CUDA graphs (:class:`PyCudaApi`; fakes in the tests).

    Copies, fills and launches are asynchronous on the stream; ``synchronize`` waits for it."""

    stream_handle: int

    def activate(self) -> contextlib.AbstractContextManager[None]: ...
    def alloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def pinned(self, shape: Shape, dtype: np.dtype) -> np.ndarray: ...
    def htod(self, ptr: int, host: np.ndarray) -> None: ...
    def dtoh(self, host: np.ndarray, ptr: int) -> None: ...
    def fill(self, ptr: int, fill: Fill) -> None: ...
    def synchronize(self) -> None: ...
    def begin_capture(self) -> None: ...
    def end_capture(self) -> Any: ...
    def launch(self, graph: Any) -> None: ...
    def destroy_graph(self, graph: Any) -> None: ...
    def close(self) -> None: ...


CU_STREAM_NON_BLOCKING = 1
CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1  # what trtexec uses (cudaStreamCaptureModeThreadLocal)


def _load_libcuda() -> Any:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    if found:
        names.append(found)
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append(str(e))
    raise BackendError(f"CUDA driver: libcuda cannot be loaded ({'; '.join(errors) or 'not found'}). "
                       "Expected the NVIDIA driver; CUDA graphs need it.")


class DriverGraphs:
    """CUDA graph calls of the driver API through ctypes (pycuda has no graph API).

    lib: the loaded ``libcuda`` (any object with the cu* functions in tests). Handles are ints;
    calls use the calling thread's current context (the backend pushes its context first)."""

    _SIGNATURES = {
        "cuStreamBeginCapture_v2": (ctypes.c_void_p, ctypes.c_int),
        "cuStreamEndCapture": (ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)),
        "cuGraphInstantiateWithFlags": (ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_ulonglong),
        "cuGraphLaunch": (ctypes.c_void_p, ctypes.c_void_p),
        "cuGraphExecDestroy": (ctypes.c_void_p,),
        "cuGraphDestroy": (ctypes.c_void_p,),
        "cuGetErrorName": (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)),
    }

    def __init__(self, lib: Any = None) -> None:
        self._lib = lib if lib is not None else _load_libcuda()
        for name, argtypes in self._SIGNATURES.items():
            fn = getattr(self._lib, name, None)
            if fn is None:
                raise BackendError(f"CUDA driver: {name} is missing. Expected a driver for CUDA >= 11.4 "
                                   "(CUDA graphs); pass cuda_graphs=False to run without them.")
            with contextlib.suppress(AttributeError, TypeError):
                fn.argtypes, fn.restype = argtypes, ctypes.c_int

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            name = ctypes.c_char_p()
            if self._lib.cuGetErrorName(int(status), ctypes.byref(name)) == 0 and name.value:
                text = name.value.decode(errors="replace")
            else:
                text = f"CUresult {status}"
            raise BackendError(f"CUDA graph: {what} failed ({text}). The step runs without CUDA graphs.")

    def begin(self, stream: int) -> None:
        self._check(self._lib.cuStreamBeginCapture_v2(ctypes.c_void_p(stream), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                    "cuStreamBeginCapture")

    def end(self, stream: int) -> int:
        """End the capture (always leaves capture mode) and instantiate the graph -> exec handle."""
        graph = ctypes.c_void_p()
        self._check(self._lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)), "cuStreamEndCapture")
        if not graph.value:
            raise BackendError("CUDA graph: the capture produced no graph. The step runs without CUDA graphs.")
        exec_ = ctypes.c_void_p()
        try:
            self._check(self._lib.cuGraphInstantiateWithFlags(ctypes.byref(exec_), graph, ctypes.c_ulonglong(0)),
                        "cuGraphInstantiateWithFlags")
        finally:
            self._lib.cuGraphDestroy(graph)  # the executable graph does not need its template
        return int(exec_.value or 0)

    def launch(self, exec_: int, stream: int) -> None:
        self._check(self._lib.cuGraphLaunch(ctypes.c_void_p(exec_), ctypes.c_void_p(stream)), "cuGraphLaunch")

    def destroy(self, exec_: int) -> None:
        self._lib.cuGraphExecDestroy(ctypes.c_void_p(exec_))


def import_pycuda() -> Any:
    """``pycuda.driver``, or an error naming the [tensorrt] extra."""
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise missing_dependency("pycuda", "tensorrt", "the TensorRT backend (device memory and streams)") from e
    return cuda


class PyCudaApi:
    """:class:`CudaApi` on pycuda: the device's primary context (shared with TensorRT's runtime
    API), one non-blocking stream, device allocations by address, pinned numpy arrays."""

    def __init__(self, device: int = 0, graphs: bool = True) -> None:
        cuda = import_pycuda()
        self._cuda = cuda
        try:
            cuda.init()
            count = cuda.Device.count()
        except Exception as e:  # pycuda.driver.Error and its subclasses
            raise BackendError(f"tensorrt backend: no usable NVIDIA GPU ({_first_line(e)}). {_NEEDS}") from e
        if count == 0:
            raise BackendError(f"tensorrt backend: the CUDA driver reports no GPU. {_NEEDS}")
        if device >= count:
            raise UsageError(f"tensorrt backend: device cuda:{device} does not exist. "
                             f"Expected cuda:0 to cuda:{count - 1}.")
        self.device = cuda.Device(device)
        self._ctx = self.device.retain_primary_context()
        self._allocs: dict[int, Any] = {}
        self._graphs: DriverGraphs | None = None
        with self.activate():
            self._stream = cuda.Stream(flags=CU_STREAM_NON_BLOCKING)
        self.stream_handle = int(self._stream.handle)
        self.graph_error: str | None = None
        if graphs:
            try:
                self._graphs = DriverGraphs()
            except BackendError as e:
                self.graph_error = str(e)

    def gpu(self) -> dict[str, str]:
        """Name and compute capability, as ``engines`` records them in the cache key."""
        major, minor = self.device.compute_capability()
        return {"name": str(self.device.name()), "compute_capability": f"{major}.{minor}"}

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def alloc(self, nbytes: int) -> int:
        buf = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._allocs[int(buf)] = buf
        return int(buf)

    def free(self, ptr: int) -> None:
        buf = self._allocs.pop(ptr, None)
        if buf is not None:
            buf.free()

    def pinned(self, shape: Shape, dtype: np.dtype) -> np.ndarray:
        return self._cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))  # type: ignore[no-any-return]

    def htod(self, ptr: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(ptr, host, self._stream)

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        self._cuda.memcpy_dtoh_async(host, ptr, self._stream)

    def fill(self, ptr: int, fill: Fill) -> None:
        if fill.kind == "copy":
            assert fill.array is not None
            staging = self.pinned(fill.array.shape, fill.array.dtype)
            np.copyto(staging, fill.array)
            self.htod(ptr, staging)
            self._stream.synchronize()  # before the staging buffer goes
            return
        memset = {"memset8": self._cuda.memset_d8_async, "memset16": self._cuda.memset_d16_async,
                  "memset32": self._cuda.memset_d32_async}[fill.kind]
        memset(ptr, fill.value, fill.count, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def begin_capture(self) -> None:
        if self._graphs is None:
            raise BackendError(self.graph_error or "CUDA graph: not available.")
        self._graphs.begin(self.stream_handle)

    def end_capture(self) -> Any:
        assert self._graphs is not None
        return self._graphs.end(self.stream_handle)

    def launch(self, graph: Any) -> None:
        assert self._graphs is not None
        self._graphs.launch(int(graph), self.stream_handle)

    def destroy_graph(self, graph: Any) -> None:
        if self._graphs is not None and graph:
            self._graphs.destroy(int(graph))

    def close(self) -> None:
        if self._ctx is None:
            return
        with self.activate():
            self._stream.synchronize()
            for ptr in list(self._allocs):
                self.free(ptr)
            self._stream = None
        self._ctx.detach()
        self._ctx = None


# --------------------------------------------------------------------------------------------
# TensorRT
# --------------------------------------------------------------------------------------------


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or an error naming the [tensorrt] extra."""
    try:
        import tensorrt
    except ImportError as e:
        raise missing_dependency("tensorrt", "tensorrt", "the TensorRT backend (on an NVIDIA GPU)") from e
    return tensorrt


def engine_info(trt: Any, engine: Any) -> EngineInfo:
    """The I/O tensors of a deserialised engine: direction, numpy dtype, shape, profile 0 of inputs."""
    info = EngineInfo()
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except (TypeError, KeyError) as e:
            raise BackendError(f"tensorrt engine: tensor {name!r} has type {engine.get_tensor_dtype(name)}, which "
                               "numpy cannot hold. Expected float32/float16/int32/int64 I/O.") from e
        profile = None
        if is_input:
            with contextlib.suppress(Exception):  # static inputs may have no profile shapes
                shapes = engine.get_tensor_profile_shape(name, 0)
                if len(shapes) == 3:
                    profile = tuple(tuple(int(d) for d in s) for s in shapes)
        info.tensors[name] = TensorInfo(name, is_input, dtype, tuple(int(d) for d in engine.get_tensor_shape(name)),
                                        profile)  # type: ignore[arg-type]
    return info


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


class TensorRTBackend:
    """A step graph on a TensorRT engine (see the module docstring for the state handling).

    Built by :func:`open`; the constructor takes what open() prepared (the artifact's
    :class:`~vdeblur.runtime.backends._common.Interface`, a deserialised engine, its
    :class:`EngineInfo`, a :class:`CudaApi`), so tests can drive it with fakes.
    """

    name = NAME

    def __init__(self, iface: Any, engine: Any, info: EngineInfo, cuda: CudaApi, *, cuda_graphs: bool = True,
                 copy_output: bool = True, keep: Sequence[Any] = (), engine_path: Path | None = None) -> None:
        self.iface = iface
        self.interface: dict[str, Any] = iface.manifest.interface
        check_io(self.interface, info, f"tensorrt engine {engine_path}" if engine_path else "tensorrt engine")
        self.info = info
        self.engine_path = engine_path
        self.inputs = [n for n in self.interface["input_names"]]
        self.outputs = [n for n in self.interface["output_names"]]
        self.copy_output = copy_output
        self._cuda: CudaApi | None = cuda
        self._engine = engine
        self._keep = list(keep)  # objects the engine needs alive (runtime, logger)
        self._graphs = GraphCache(cuda_graphs, release=self._release_graph)
        with cuda.activate():
            self._ctx = engine.create_execution_context()
        if self._ctx is None:
            raise BackendError("tensorrt engine: cannot create an execution context (out of GPU memory?). "
                               "Expected free device memory for the engine's activations.")
        self._run_ctx: Any = None
        self._size: tuple[int, int, int] | None = None
        self._shapes: dict[str, Shape] = {}
        self._states: list[StatePlan] = []
        self._device: list[int] = []  # every device buffer of the current size
        self._pingpong = PingPong([], [])
        self._frame = self._out = 0
        self._flag: int | None = None
        self._flag_value: int | None = None
        self._host_in = self._host_out = self._host_flag = np.empty(0, np.float32)

    # ----- introspection -------------------------------------------------------------------

    @property
    def cuda_graphs(self) -> str:
        """``on`` (graphs in use or about to be), or why not."""
        return "on" if self._graphs.enabled else f"off: {self._graphs.disabled_reason}"

    @property
    def steps(self) -> int:
        """Steps run since the last reset."""
        return self._pingpong.step

    # ----- lifecycle -------------------------------------------------------------------------

    def _api(self) -> CudaApi:
        if self._cuda is None:
            raise BackendError("tensorrt backend: is closed. Open a new one with open_backend(..., 'tensorrt').")
        return self._cuda

    def reset(self, batch: int, height: int, width: int) -> None:
        """Start a stream of (batch, 3, height, width) padded frames: states at their initial values.

        Buffers (and CUDA graphs) are kept when the size is the one of the current stream."""
        cuda = self._api()
        check_size(batch, height, width, int(self.interface["pad_multiple"]))
        size = (int(batch), int(height), int(width))
        with cuda.activate():
            if size != self._size:
                self._allocate(*size)
            for plan, (slot0, _) in zip(self._states, self._pingpong.slots, strict=True):
                cuda.fill(slot0, plan.fill)
            if self._flag is not None:
                self._host_flag[...] = 0
                cuda.htod(self._flag, self._host_flag)
            cuda.synchronize()
        self._flag_value = 0
        self._pingpong.reset()

    def _allocate(self, batch: int, height: int, width: int) -> None:
        cuda = self._api()
        iface = self.interface
        shapes = input_shapes(iface, batch, height, width)
        for name, shape in shapes.items():
            check_profile(name, shape, self.info.tensors[name].profile)
        states = plan_states(iface, batch, height, width, {n: self.info.dtype(n) for n in shapes})
        self._free_buffers()  # and the graphs that captured their addresses
        try:
            for name, shape in shapes.items():
                if not self._ctx.set_input_shape(name, shape):
                    raise BackendError(f"tensorrt engine: rejected the shape {shape} of input {name!r}. "
                                       "Expected a shape within its optimisation profile.")
            frame_in, frame_out = iface["frame_input"], iface["frame_output"]
            out_shape = tuple(int(d) for d in self._ctx.get_tensor_shape(frame_out))
            if out_shape != shapes[frame_in]:
                raise BackendError(f"tensorrt engine: output {frame_out!r} would be {out_shape} for a frame of "
                                   f"{shapes[frame_in]}. Expected the same shape; rebuild the engine.")
            for p in states:
                got = tuple(int(d) for d in self._ctx.get_tensor_shape(p.output_name))
                if got != p.shape:
                    raise BackendError(f"tensorrt engine: state output {p.output_name!r} would be {got}, its input "
                                       f"{p.input_name!r} is {p.shape}. Expected equal shapes (ping-pong buffers).")
            slots = []
            for p in states:
                slots.append((self._new(p.nbytes), self._new(p.nbytes)))
            self._frame = self._new(_nbytes(shapes[frame_in], self.info.dtype(frame_in)))
            self._out = self._new(_nbytes(shapes[frame_in], self.info.dtype(frame_out)))
            self._host_in = cuda.pinned(shapes[frame_in], self.info.dtype(frame_in))
            self._host_out = cuda.pinned(shapes[frame_in], self.info.dtype(frame_out))
            flag = (iface.get("flush") or {}).get("flag_input")
            if flag:
                self._flag = self._new(_nbytes(shapes[flag], self.info.dtype(flag)))
                self._host_flag = cuda.pinned(shapes[flag], self.info.dtype(flag))
                self._set_address(flag, self._flag)
            self._set_address(frame_in, self._frame)
            self._set_address(frame_out, self._out)
        except BaseException:
            self._free_buffers()
            raise
        self._states = states
        self._shapes = shapes
        self._pingpong = PingPong([(p.input_name, p.output_name) for p in states], slots)
        self._size = (batch, height, width)

    def _new(self, nbytes: int) -> int:
        ptr = self._api().alloc(nbytes)
        self._device.append(ptr)
        return ptr

    def _set_address(self, name: str, ptr: int) -> None:
        if not self._ctx.set_tensor_address(name, ptr):
            raise BackendError(f"tensorrt engine: set_tensor_address rejected {name!r}. Expected an engine I/O tensor.")

    def _free_buffers(self) -> None:
        """Free the buffers of the current size (and the graphs that captured their addresses)."""
        self._graphs.invalidate(None)
        if self._cuda is not None:
            for ptr in self._device:
                self._cuda.free(ptr)
        self._device = []
        self._host_in = self._host_out = self._host_flag = np.empty(0, np.float32)  # pinned: freed with them
        self._size = None
        self._flag = None
        self._states = []
        self._pingpong = PingPong([], [])

    def _release_graph(self, graph: Any) -> None:
        if self._cuda is not None:
            self._cuda.destroy_graph(graph)

    # ----- stateful stepping -------------------------------------------------------------

    def step(self, frame: np.ndarray, flush: bool = False) -> np.ndarray:
        """One step: frame (N, 3, Hp, Wp) float32 -> output frame (N, 3, Hp, Wp) float32.

        The first frame, and a frame of another size, reset the stream for that size (as the other
        backends do). The returned array is a copy unless ``copy_output=False`` (then it is the
        pinned host buffer, overwritten by the next step)."""
        cuda = self._api()
        expected = None if self._size is None else (self._size[0], 3, self._size[1], self._size[2])
        frame = check_frame(frame, int(self.interface["pad_multiple"]), expected)
        n, _, h, w = frame.shape
        if (n, h, w) != self._size:
            self.reset(n, h, w)
        with cuda.activate():
            np.copyto(self._host_in, frame, casting="same_kind")
            cuda.htod(self._frame, self._host_in)
            if self._flag is not None and int(bool(flush)) != self._flag_value:
                self._host_flag[...] = int(bool(flush))
                cuda.htod(self._flag, self._host_flag)
                self._flag_value = int(bool(flush))
            self._execute()
            cuda.dtoh(self._host_out, self._out)
            cuda.synchronize()
        self._pingpong.advance()
        if self._host_out.dtype != np.float32:
            return self._host_out.astype(np.float32)
        return self._host_out.copy() if self.copy_output else self._host_out

    def _execute(self) -> None:
        """Run the engine once with the current ping-pong parity: plain, captured or as a graph."""
        cuda = self._api()
        key = self._graphs.key(self._pingpong.parity, self._shapes)
        action = self._graphs.action(key)
        if action == "launch":
            cuda.launch(self._graphs.get(key))
            return
        for name, ptr in self._pingpong.bindings().items():
            self._set_address(name, ptr)
        if action == "capture":
            try:
                graph = self._capture()
            except Exception as e:  # any capture failure: fall back to plain launches, as trtexec does
                reason = f"capture failed ({_first_line(e)})"
                self._graphs.disable(reason)
                warnings.warn(f"tensorrt backend: CUDA graph {reason}. Running without CUDA graphs.",
                              RuntimeWarning, stacklevel=3)
            else:
                self._graphs.store(key, graph)
                cuda.launch(graph)
                return
        if not self._ctx.execute_async_v3(cuda.stream_handle):
            raise BackendError("tensorrt engine: execute_async_v3 failed. See the TensorRT log above.")
        self._graphs.warmed(key)

    def _capture(self) -> Any:
        cuda = self._api()
        cuda.begin_capture()
        try:
            ok = self._ctx.execute_async_v3(cuda.stream_handle)
        finally:
            graph = cuda.end_capture()  # always leaves capture mode
        if not ok:
            cuda.destroy_graph(graph)
            raise BackendError("execute_async_v3 returned False while capturing")
        return graph

    # ----- stateless ---------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every input by name -> every output by name (one step, own execution context; the
        stream's state is not touched). Allocates per call: for checks and tests, not speed."""
        cuda = self._api()
        arrays = check_feeds(feeds, self.info)
        for name, arr in arrays.items():
            check_profile(name, arr.shape, self.info.tensors[name].profile)
        ptrs: list[int] = []
        with cuda.activate():
            if self._run_ctx is None:
                self._run_ctx = self._engine.create_execution_context()
                if self._run_ctx is None:
                    raise BackendError("tensorrt engine: cannot create an execution context for run(). "
                                       "Expected free device memory.")
            ctx = self._run_ctx
            try:
                for name, arr in arrays.items():
                    if not ctx.set_input_shape(name, arr.shape):
                        raise ShapeError(f"tensorrt run: input {name!r} of shape {arr.shape} was rejected. "
                                         "Expected a shape within the engine's optimisation profile.")
                    ptr = cuda.alloc(arr.nbytes)
                    ptrs.append(ptr)
                    host = cuda.pinned(arr.shape, arr.dtype)
                    np.copyto(host, arr)
                    cuda.htod(ptr, host)
                    ctx.set_tensor_address(name, ptr)
                hosts = {}
                for name in self.info.outputs:
                    shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
                    ptr = cuda.alloc(_nbytes(shape, self.info.dtype(name)))
                    ptrs.append(ptr)
                    hosts[name] = (ptr, cuda.pinned(shape, self.info.dtype(name)))
                    ctx.set_tensor_address(name, ptr)
                if not ctx.execute_async_v3(cuda.stream_handle):
                    raise BackendError("tensorrt engine: execute_async_v3 failed in run(). See the TensorRT log above.")
                for ptr, host in hosts.values():
                    cuda.dtoh(host, ptr)
                cuda.synchronize()
                return {name: np.array(host) for name, (_, host) in hosts.items()}
            finally:
                cuda.synchronize()
                for ptr in ptrs:
                    cuda.free(ptr)

    def close(self) -> None:
        """Release the graphs, the device buffers, the execution contexts and the engine."""
        cuda = self._cuda
        if cuda is None:
            return
        with cuda.activate():
            cuda.synchronize()
            self._graphs.clear()
            self._free_buffers()
            self._ctx = None
            self._run_ctx = None
            self._engine = None
        self._keep.clear()
        cuda.close()
        self._cuda = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not leak device memory
        with contextlib.suppress(Exception):
            self.close()


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open(artifact: str | Path, precision: str = "fp32", device: str = "auto",  # noqa: A001
         shapes: Any = None, cuda_graphs: bool = True, **options: Any) -> TensorRTBackend:
    """Open ``artifact`` on TensorRT.

    precision: the artifact's graph to run (its ``trt`` lowering); device: auto | cuda | cuda:N;
    shapes: "HxW:HxW:HxW" min:opt:max padded frame sizes of the engine's profile (None: a cached
    engine of the artifact if there is one, else the default profile; see export/engines.py);
    cuda_graphs: capture and replay CUDA graphs (falls back to plain launches when capture fails).
    options: ``engine`` (path of a serialized engine to use as is), ``register_plugins`` (True:
    register the vdeblur plugins before deserialising), ``copy_output`` (True: step returns a copy).
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"tensorrt backend: options {unknown} are unknown. Expected some of {list(OPTIONS)}.")
    if precision not in PRECISIONS:
        raise UsageError(f"tensorrt backend: precision {precision!r} is unknown. "
                         f"Expected one of {', '.join(PRECISIONS)}.")
    index = parse_device(device)
    from vdeblur.runtime.backends._common import Interface

    iface = Interface(artifact)
    trt = import_tensorrt()
    cuda = PyCudaApi(index, graphs=cuda_graphs)
    try:
        choice = select_engine(artifact, precision, shapes, options.get("engine"),
                               trt_version=str(getattr(trt, "__version__", "")) or None, gpu=cuda.gpu())
        if options.get("register_plugins", True):
            from vdeblur.plugins.lowering import register_tensorrt_plugins

            register_tensorrt_plugins()
        logger = trt.Logger(trt.Logger.WARNING)
        with cuda.activate():
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(choice.path.read_bytes())
        if engine is None:
            raise BackendError(f"{choice.path}: TensorRT cannot deserialize this engine (see the TensorRT log above). "
                               "Expected an engine built by this TensorRT version for this GPU; rebuild it with "
                               "`vdeblur build --backend tensorrt`.")
        graphs = cuda_graphs and cuda.graph_error is None
        backend = TensorRTBackend(iface, engine, engine_info(trt, engine), cuda, cuda_graphs=graphs,
                                  copy_output=bool(options.get("copy_output", True)), keep=[runtime, logger],
                                  engine_path=choice.path)
        if cuda_graphs and cuda.graph_error is not None:
            backend._graphs.disabled_reason = cuda.graph_error
    except BaseException:
        cuda.close()
        raise
    return backend
