"""The TensorRT backend: a step graph on a deserialised engine (see the package docstring for the
state handling: ping-pong buffers, host copies, CUDA graphs).

:class:`TensorRTBackend` takes what :func:`vdeblur.runtime.backends.tensorrt.open` prepared (the
artifact's :class:`~vdeblur.runtime.backends.base.Interface`, a deserialised engine, its
:class:`EngineInfo`, a :class:`CudaApi`), so tests drive it with fakes. Not thread-safe: one
backend serves one stream from one thread at a time (the CUDA context is pushed around every call,
so that thread may change between calls).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vdeblur.errors import BackendError, ShapeError, missing_dependency
from vdeblur.runtime.backends.base import Backend, Interface
from vdeblur.runtime.backends.tensorrt.buffers import GraphCache, PingPong
from vdeblur.runtime.backends.tensorrt.cuda import CudaApi, first_line
from vdeblur.runtime.backends.tensorrt.plan import (
    EngineInfo,
    Shape,
    StatePlan,
    TensorInfo,
    check_feeds,
    check_frame,
    check_io,
    check_profile,
    check_size,
    input_shapes,
    nbytes,
    plan_states,
)

NAME = "tensorrt"


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


class TensorRTBackend(Backend):
    """A step graph on a TensorRT engine (ping-pong state buffers, CUDA graphs).

    iface: the artifact's interface; engine: a deserialised ``ICudaEngine`` (or a fake); info: its
    I/O tensors (:func:`engine_info`); cuda: the :class:`CudaApi` the engine's memory lives in
    (closed with the backend); keep: objects the engine needs alive (runtime, logger);
    engine_path / engine_source / engine_meta: where the engine came from (``given`` | ``cache``)
    and its sidecar, for :meth:`describe`.
    """

    name = NAME

    def __init__(self, iface: Interface, engine: Any, info: EngineInfo, cuda: CudaApi, *, cuda_graphs: bool = True,
                 copy_output: bool = True, keep: Sequence[Any] = (), engine_path: Path | None = None,
                 precision: str = "fp32", device: int = 0, engine_source: str | None = None,
                 engine_meta: dict[str, Any] | None = None) -> None:
        super().__init__(iface.artifact, precision, iface=iface)
        self.interface: dict[str, Any] = iface.manifest.interface
        self._cuda: CudaApi | None = None  # set below: close() before that has nothing to release
        check_io(self.interface, info, f"tensorrt engine {engine_path}" if engine_path else "tensorrt engine")
        self.info = info
        self.engine_path = engine_path
        self.engine_source = engine_source
        self.engine_meta = engine_meta
        self.device_index = device
        self.device = f"cuda:{device}"
        self.copy_output = copy_output
        self._cuda = cuda
        self._engine = engine
        self._keep = list(keep)
        self._graphs = GraphCache(cuda_graphs, release=self._release_graph)
        self._ctx: Any = None
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
        with cuda.activate():
            self._ctx = engine.create_execution_context()
        if self._ctx is None:
            raise BackendError("tensorrt engine: cannot create an execution context (out of GPU memory?). "
                               "Expected free device memory for the engine's activations.")

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
        if self._cuda is None or self.closed:
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
            self._frame = self._new(nbytes(shapes[frame_in], self.info.dtype(frame_in)))
            self._out = self._new(nbytes(shapes[frame_in], self.info.dtype(frame_out)))
            self._host_in = cuda.pinned(shapes[frame_in], self.info.dtype(frame_in))
            self._host_out = cuda.pinned(shapes[frame_in], self.info.dtype(frame_out))
            flag = (iface.get("flush") or {}).get("flag_input")
            if flag:
                self._flag = self._new(nbytes(shapes[flag], self.info.dtype(flag)))
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
                reason = f"capture failed ({first_line(e)})"
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

    # ----- clip graphs ----------------------------------------------------------------------

    def clip(self, frames: np.ndarray) -> np.ndarray:
        """A window of padded frames (N, T, 3, Hp, Wp) float32 through a clip engine (T within the
        engine's profile: 1 .. the window it was built for). Runs through :meth:`run`: a window is
        many frames of work, so its per-call buffers cost little next to it."""
        self._api()
        self.iface.check_clip(frames)
        name_in, name_out = self.interface["frame_input"], self.interface["frame_output"]
        out = self.run({name_in: frames.astype(self.info.dtype(name_in), copy=False)})[name_out]
        return np.asarray(out, dtype=np.float32)

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
                    ptr = cuda.alloc(nbytes(shape, self.info.dtype(name)))
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

    def describe(self) -> dict[str, Any]:
        """Which engine this backend runs: file (relative to the artifact when inside it), built (True:
        a `vdeblur build` engine from the cache), where it came from, its profile, CUDA graphs."""
        path = self.engine_path
        try:
            shown = str(path.resolve().relative_to(self.iface.artifact.resolve())) if path else None
        except ValueError:  # an engine given from elsewhere
            shown = str(path)
        meta = self.engine_meta or {}
        notes = [f"engine from {self.engine_source}"] if self.engine_source else []
        shapes = meta.get("shapes")
        if isinstance(shapes, dict) and shapes:
            notes.append("profile " + ":".join(f"{h}x{w}" for h, w in shapes.values()))
        return {"file": shown, "built": self.engine_source == "cache", "verified": None, "fallback": None,
                "notes": notes, "precision": self.precision, "device": self.device,
                "cuda_graphs": self.cuda_graphs}

    def _release(self) -> None:
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

    def __del__(self) -> None:  # a forgotten close() must not leak device memory
        with contextlib.suppress(Exception):
            self.close()


