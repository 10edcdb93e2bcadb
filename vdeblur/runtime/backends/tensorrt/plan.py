"""Planning a TensorRT stream without TensorRT or CUDA: state buffers, fills, input shapes, and the
checks on frames, sizes, profiles, engine I/O and feeds (plain Python and numpy).

State shapes resolve through THE shape grammar (:func:`vdeblur.contract.interface.resolve_shape`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vdeblur.contract.interface import resolve_shape
from vdeblur.errors import BackendError, ShapeError, UsageError

Shape = tuple[int, ...]
_DEVICE = re.compile(r"^(?:cuda|gpu)(?::([0-9]+))?$")


# --------------------------------------------------------------------------------------------
# State buffer plan: concrete shapes, dtypes, bytes and initial fills
# --------------------------------------------------------------------------------------------


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
        shape = resolve_shape(s["shape"], batch, height, width, f"state {name!r}")
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


def nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


# --------------------------------------------------------------------------------------------
# Checks
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
                         "(`vdeblur build ARTIFACT --backend tensorrt --shapes MIN:OPT:MAX`, then open(..., "
                         "shapes=MIN:OPT:MAX)).")


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
    """The I/O tensors of an engine, by name (from ``engine_info``, or written by hand in tests)."""

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
    """The engine's tensors are the manifest's step (or clip) interface; ping-pong pairs share a dtype."""
    problems = []
    want_in, want_out = list(interface["input_names"]), list(interface["output_names"])
    if sorted(info.inputs) != sorted(want_in):
        problems.append(f"its inputs are {sorted(info.inputs)}, the manifest's {sorted(want_in)}")
    if sorted(info.outputs) != sorted(want_out):  # every output needs a bound buffer
        problems.append(f"its outputs are {sorted(info.outputs)}, the manifest's {sorted(want_out)}")
    if not problems:
        for s in interface.get("states", []):  # a clip graph has none
            a, b = info.dtype(s["input_name"]), info.dtype(s["output_name"])
            if a != b:
                problems.append(f"state {s['input_name']!r} is {a} but {s['output_name']!r} is {b}")
        for name in (interface["frame_input"], interface["frame_output"]):
            if info.dtype(name).kind != "f":
                problems.append(f"frame tensor {name!r} is {info.dtype(name)}")
    if problems:
        raise BackendError(f"{subject}: does not match the artifact ({'; '.join(problems)}). Expected the engine of "
                           "this artifact's trt graph; rebuild it with `vdeblur build ARTIFACT --backend tensorrt`.")


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
