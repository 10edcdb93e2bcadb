"""The TensorRT backend (vdeblur/runtime/backends/tensorrt/: plan, buffers, cuda, backend, open).

Without TensorRT and a GPU: the pure pieces (state plan, fills, ping-pong schedule, CUDA-graph
cache, checks, engine selection from the cache, the ctypes CUDA-graph wrapper on a fake driver)
and the whole step/reset/run/close flow of TensorRTBackend on a fake CUDA + fake engine that
computes a known recurrence in numpy, with CUDA graphs that replay the addresses they captured.
With TensorRT and a GPU (marked tensorrt + gpu): a real engine of a tiny MTU, built by `vdeblur
build`, against the ONNX Runtime graph of the same artifact.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vdeblur.errors import BackendError, MissingDependencyError, ShapeError, UsageError
from vdeblur.runtime.backends import tensorrt as trt_backend
from vdeblur.runtime.backends.base import Backend, Interface
from vdeblur.runtime.backends.tensorrt import (
    DriverGraphs,
    EngineInfo,
    Fill,
    GraphCache,
    PingPong,
    TensorInfo,
    TensorRTBackend,
    check_feeds,
    check_frame,
    check_io,
    check_profile,
    check_size,
    fill_pattern,
    input_shapes,
    parse_device,
    plan_states,
    select_engine,
)

# --------------------------------------------------------------------------------------------
# A hand-written step interface: a flush flag and three states of different shapes and dtypes
# --------------------------------------------------------------------------------------------


def interface(flag: bool = True) -> dict[str, Any]:
    states = [
        {"input_name": "count", "output_name": "count_next", "shape": ["N"], "dtype": "int32", "initial": 0.0},
        {"input_name": "acc", "output_name": "acc_next", "shape": ["N", 3, "Hp", "Wp"], "dtype": "float32",
         "initial": 0.5},
        {"input_name": "low", "output_name": "low_next", "shape": ["N", 2, "Hp/4", "Wp/4"], "dtype": "float32",
         "initial": 0.0},
    ]
    flag_input = "is_flush" if flag else None
    return {
        "family": "toy", "config": {}, "lookahead": 1, "pad_multiple": 4, "states": states,
        "flush": {"steps": 1, "frame": "repeat_last", "flag_input": flag_input},
        "pad_mode": "replicate", "pads_inside": False, "frame_input": "frame", "frame_output": "output",
        "layout": "NCHW", "value_range": [0.0, 1.0], "dtype": "float32", "kind": "step", "format_version": 1,
        "input_names": ["frame", *([flag_input] if flag else []), "count", "acc", "low"],
        "output_names": ["output", "count_next", "acc_next", "low_next"],
    }


def write_artifact(directory: Path, flag: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": 1, "model": {"family": "toy"}, "kind": "step", "interface": interface(flag),
        "graphs": [{"file": "model.portable.onnx", "precision": "fp32", "lowering": "portable", "sha256": "a" * 64},
                   {"file": "model.onnx", "precision": "fp32", "lowering": "trt", "sha256": "b" * 64}],
        "plugins": [], "opset": 18, "versions": {},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def toy_step(x: dict[str, np.ndarray], flag: bool) -> dict[str, np.ndarray]:
    """What the fake engine computes: a recurrence where a wrong buffer shows in every output."""
    f = x["is_flush"][:, None, None, None] if flag else 0
    return {
        "output": x["frame"] + x["acc"] + 100.0 * f,
        "acc_next": x["acc"] + x["frame"],
        "count_next": x["count"] + 1,
        "low_next": x["low"] + x["count"][:, None, None, None] + 1.0,
    }


def toy_reference(frames: list[np.ndarray], flushes: list[bool], flag: bool) -> list[np.ndarray]:
    n, _, h, w = frames[0].shape
    s = {"count": np.zeros(n, np.int32), "acc": np.full((n, 3, h, w), 0.5, np.float32),
         "low": np.zeros((n, 2, h // 4, w // 4), np.float32)}
    outs = []
    for frame, fl in zip(frames, flushes, strict=True):
        y = toy_step({"frame": frame, "is_flush": np.full(n, int(fl), np.int32), **s}, flag)
        outs.append(y["output"])
        s = {"count": y["count_next"], "acc": y["acc_next"], "low": y["low_next"]}
    return outs


def toy_info(iface: dict[str, Any], lo: tuple[int, int] = (8, 8), hi: tuple[int, int] = (64, 64),
             dtypes: dict[str, Any] | None = None) -> EngineInfo:
    """The EngineInfo an engine of ``iface`` built for batch 1 and sizes lo..hi would report."""
    info = EngineInfo()
    lo_shapes, hi_shapes = input_shapes(iface, 1, *lo), input_shapes(iface, 1, *hi)
    state_dtype = {s["input_name"]: s["dtype"] for s in iface["states"]}
    state_dtype.update({s["output_name"]: s["dtype"] for s in iface["states"]})
    for name in iface["input_names"]:
        dtype = np.dtype((dtypes or {}).get(name, "int32" if name == "is_flush" else state_dtype.get(name, "float32")))
        info.tensors[name] = TensorInfo(name, True, dtype, tuple(-1 for _ in lo_shapes[name]),
                                        (lo_shapes[name], lo_shapes[name], hi_shapes[name]))
    for name in iface["output_names"]:
        dtype = np.dtype((dtypes or {}).get(name, state_dtype.get(name, "float32")))
        info.tensors[name] = TensorInfo(name, False, dtype)
    return info


# --------------------------------------------------------------------------------------------
# Fakes: CUDA memory in numpy, an engine computing toy_step from the bound addresses
# --------------------------------------------------------------------------------------------


class FakeCuda:
    """CudaApi in host memory. Copies run at once; a capture records engine launches, and a graph
    launch replays them with the addresses bound at capture time (like a real CUDA graph)."""

    stream_handle = 0x5E

    def __init__(self, fail_capture: bool = False) -> None:
        self.mem: dict[int, np.ndarray] = {}
        self.next_ptr = 0x10000
        self.calls: Counter[str] = Counter()
        self.capturing: list[Callable[[], None]] | None = None
        self.graphs: dict[int, list[Callable[[], None]]] = {}
        self.fail_capture = fail_capture
        self.depth = 0
        self.closed = False

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def _active(self) -> None:
        assert self.depth > 0, "CUDA call outside the backend's context"

    def alloc(self, nbytes: int) -> int:
        self._active()
        ptr = self.next_ptr
        self.next_ptr += nbytes + 256
        self.mem[ptr] = np.full(nbytes, 0xAB, np.uint8)  # garbage, as fresh device memory
        return ptr

    def free(self, ptr: int) -> None:
        self._active()
        del self.mem[ptr]

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        count = int(np.prod(shape))
        return self.mem[ptr].view(np.dtype(dtype))[:count].reshape(shape)

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype)

    def htod(self, ptr: int, host: np.ndarray) -> None:
        self._active()
        self.calls["htod"] += 1
        self.mem[ptr][: host.nbytes] = np.frombuffer(host.tobytes(), np.uint8)

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        self._active()
        self.calls["dtoh"] += 1
        host.reshape(-1).view(np.uint8)[:] = self.mem[ptr][: host.nbytes]

    def fill(self, ptr: int, fill: Fill) -> None:
        self._active()
        self.calls["fill"] += 1
        if fill.kind == "copy":
            assert fill.array is not None
            self.mem[ptr][: fill.array.nbytes] = np.frombuffer(fill.array.tobytes(), np.uint8)
            return
        bits = {"memset8": np.uint8, "memset16": np.uint16, "memset32": np.uint32}[fill.kind]
        self.mem[ptr].view(bits)[: fill.count] = fill.value

    def synchronize(self) -> None:
        self.calls["sync"] += 1

    def begin_capture(self) -> None:
        self._active()
        if self.fail_capture:
            raise BackendError("CUDA graph: cuStreamBeginCapture failed (CUDA_ERROR_NOT_SUPPORTED).")
        self.calls["capture"] += 1
        self.capturing = []

    def end_capture(self) -> int:
        assert self.capturing is not None
        handle = 0x6000 + self.calls["capture"]
        self.graphs[handle] = self.capturing
        self.capturing = None
        return handle

    def launch(self, graph: int) -> None:
        self._active()
        self.calls["launch"] += 1
        for op in self.graphs[graph]:
            op()

    def destroy_graph(self, graph: int) -> None:
        self.calls["destroy"] += 1
        del self.graphs[graph]

    def close(self) -> None:
        self.closed = True


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert self.engine.info.tensors[name].is_input
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        source = {"output": "frame", **{s["output_name"]: s["input_name"] for s in self.engine.iface["states"]}}
        return self.shapes[source.get(name, name)]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        cuda = self.engine.cuda
        assert stream == cuda.stream_handle
        bound, shapes = dict(self.addresses), dict(self.shapes)
        info = self.engine.info

        def run() -> None:
            ins = {n for n in bound if info.tensors[n].is_input}
            outs = set(bound) - ins
            assert not {bound[n] for n in ins} & {bound[n] for n in outs}, "an output aliases an input"
            x = {n: cuda.view(bound[n], shapes[n], info.dtype(n)).copy() for n in ins}
            for name, value in toy_step(x, self.engine.flag).items():
                cuda.view(bound[name], value.shape, info.dtype(name))[...] = value

        self.executions += 1
        if cuda.capturing is not None:
            cuda.capturing.append(run)
        else:
            run()
        return True


class FakeEngine:
    def __init__(self, cuda: FakeCuda, iface: dict[str, Any], info: EngineInfo) -> None:
        self.cuda, self.iface, self.info = cuda, iface, info
        self.flag = bool(iface["flush"]["flag_input"])
        self.contexts: list[FakeContext] = []

    def create_execution_context(self) -> FakeContext:
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx

    # the ICudaEngine queries engine_info() makes (dtypes stand for TensorRT's DataType)
    @property
    def num_io_tensors(self) -> int:
        return len(self.info.tensors)

    def get_tensor_name(self, i: int) -> str:
        return list(self.info.tensors)[i]

    def get_tensor_mode(self, name: str) -> str:
        return FakeTrt.TensorIOMode.INPUT if self.info.tensors[name].is_input else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return self.info.dtype(name)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.info.tensors[name].shape

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        assert profile == 0
        return list(self.info.tensors[name].profile or ())


class FakeTrt:
    """The few names of the tensorrt module that open() and engine_info() use."""

    __version__ = "10.13.0"

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    def __init__(self, engine: FakeEngine | None) -> None:
        self.engine = engine
        self.deserialized: list[bytes] = []

    @staticmethod
    def nptype(dtype: Any) -> Any:
        return dtype

    def Runtime(self, logger: Any) -> Any:  # noqa: N802 - the tensorrt name
        outer = self

        class Runtime:
            def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
                outer.deserialized.append(data)
                return outer.engine

        return Runtime()


def make_backend(tmp_path: Path, flag: bool = True, cuda_graphs: bool = True, fail_capture: bool = False,
                 copy_output: bool = True) -> tuple[TensorRTBackend, FakeCuda, FakeEngine]:
    iface = Interface(write_artifact(tmp_path / "artifact", flag))
    info = toy_info(iface.manifest.interface)
    cuda = FakeCuda(fail_capture)
    engine = FakeEngine(cuda, iface.manifest.interface, info)
    backend = TensorRTBackend(iface, engine, info, cuda, cuda_graphs=cuda_graphs, copy_output=copy_output)
    return backend, cuda, engine


def frames(count: int, n: int = 1, h: int = 8, w: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 3, h, w), dtype=np.float32) for _ in range(count)]


# --------------------------------------------------------------------------------------------
# Module import
# --------------------------------------------------------------------------------------------


def test_import_does_not_import_torch_tensorrt_pycuda_or_the_build() -> None:
    code = ("import vdeblur.runtime.backends.tensorrt, sys; "
            "bad = [m for m in sys.modules if m in ('torch', 'tensorrt', 'pycuda') "
            "or m.startswith(('vdeblur.build', 'vdeblur.export', 'vdeblur.models'))]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------
# State plan and fills
# --------------------------------------------------------------------------------------------


def test_plan_states_resolves_symbolic_shapes() -> None:
    plans = plan_states(interface(), 2, 16, 24)
    assert [(p.input_name, p.output_name) for p in plans] == [
        ("count", "count_next"), ("acc", "acc_next"), ("low", "low_next")]
    assert [p.shape for p in plans] == [(2,), (2, 3, 16, 24), (2, 2, 4, 6)]
    assert [p.dtype for p in plans] == [np.dtype("int32"), np.dtype("float32"), np.dtype("float32")]
    assert [p.nbytes for p in plans] == [8, 2 * 3 * 16 * 24 * 4, 2 * 2 * 4 * 6 * 4]
    assert plans[1].initial == 0.5
    np.testing.assert_array_equal(plans[1].initial_array(), np.full((2, 3, 16, 24), 0.5, np.float32))
    # the engine's dtypes win over the manifest's
    assert plan_states(interface(), 1, 8, 8, {"acc": np.float16})[1].dtype == np.float16


def test_input_shapes_cover_frame_flag_and_states() -> None:
    assert input_shapes(interface(), 1, 8, 12) == {
        "frame": (1, 3, 8, 12), "is_flush": (1,), "count": (1,), "acc": (1, 3, 8, 12), "low": (1, 2, 2, 3)}
    assert "is_flush" not in input_shapes(interface(flag=False), 1, 8, 12)


def test_plan_states_reports_unpadded_sizes() -> None:
    """The shape grammar is the contract's (tests/contract/test_interface.py); its errors name the state."""
    with pytest.raises(ShapeError, match=r"state 'low': Hp=10 is not divisible by 4"):
        plan_states(interface(), 1, 10, 8)


@pytest.mark.parametrize(("dtype", "initial", "kind", "value"), [
    ("float32", 0.0, "memset8", 0),
    ("int32", 0.0, "memset8", 0),
    ("float32", 0.5, "memset32", int(np.float32(0.5).view(np.uint32))),
    ("float32", -1.0, "memset32", int(np.float32(-1.0).view(np.uint32))),
    ("int32", 3.0, "memset32", 3),
    ("int32", -1.0, "memset32", 0xFFFFFFFF),
    ("float16", 1.0, "memset16", int(np.float16(1.0).view(np.uint16))),
    ("uint8", 255.0, "memset8", 255),
])
def test_fill_pattern_memsets(dtype: str, initial: float, kind: str, value: int) -> None:
    fill = fill_pattern((2, 3), np.dtype(dtype), initial)
    assert (fill.kind, fill.value) == (kind, value)
    itemsize = np.dtype(dtype).itemsize
    assert fill.count == (6 * itemsize if kind == "memset8" and initial == 0 else 6)
    # the pattern really is the value: apply it to bytes and read them back
    buf = np.zeros(6 * itemsize, np.uint8)
    buf.view({"memset8": np.uint8, "memset16": np.uint16, "memset32": np.uint32}[kind])[: fill.count] = fill.value
    np.testing.assert_array_equal(buf.view(dtype), np.full(6, initial, dtype))


def test_fill_pattern_copy_and_errors() -> None:
    fill = fill_pattern((2,), np.dtype("int64"), 7)
    assert fill.kind == "copy" and fill.array is not None
    np.testing.assert_array_equal(fill.array, np.array([7, 7], np.int64))
    assert fill_pattern((2,), np.dtype("int64"), 0).kind == "memset8"
    with pytest.raises(BackendError, match=r"manifest: state 'c' has initial value 0\.5, which int32 cannot hold"):
        fill_pattern((2,), np.dtype("int32"), 0.5, "state 'c'")


# --------------------------------------------------------------------------------------------
# Ping-pong schedule
# --------------------------------------------------------------------------------------------


def test_pingpong_schedule_over_steps() -> None:
    pp = PingPong([("a", "a_next"), ("b", "b_next")], [(100, 101), (200, 201)])
    seen: list[dict[str, int]] = []
    for k in range(6):
        b = pp.bindings()
        assert pp.parity == k % 2
        # outputs never alias the inputs they are computed from
        assert not {b["a"], b["b"]} & {b["a_next"], b["b_next"]}
        assert b["a"] != b["a_next"] and b["b"] != b["b_next"]
        # the state lives in slot `parity` before the step
        assert pp.current() == {"a": b["a"], "b": b["b"]}
        if k:
            prev = seen[-1]
            assert (b["a"], b["b"]) == (prev["a_next"], prev["b_next"])  # step k reads what k-1 wrote
        seen.append(b)
        pp.advance()
    assert seen[0] == seen[2] == seen[4] and seen[1] == seen[3] == seen[5] and seen[0] != seen[1]
    assert seen[0] == {"a": 100, "a_next": 101, "b": 200, "b_next": 201}
    assert pp.bindings(step=1) == seen[1]
    pp.reset()
    assert pp.step == 0 and pp.bindings() == seen[0]


def test_pingpong_rejects_bad_slots() -> None:
    with pytest.raises(ValueError, match="both slots"):
        PingPong([("a", "a_next")], [(5, 5)])
    with pytest.raises(ValueError, match="1 states but 0"):
        PingPong([("a", "a_next")], [])


# --------------------------------------------------------------------------------------------
# CUDA-graph cache
# --------------------------------------------------------------------------------------------


def test_graph_cache_warm_capture_launch_per_parity() -> None:
    released: list[Any] = []
    cache = GraphCache(True, released.append)
    shapes = {"frame": (1, 3, 8, 8), "acc": (1, 3, 8, 8)}
    k0, k1 = cache.key(0, shapes), cache.key(1, shapes)
    assert k0 == cache.key(0, dict(reversed(list(shapes.items()))))  # order-free
    assert k0 != k1
    assert cache.action(k0) == "plain"
    cache.warmed(k0)
    assert cache.action(k0) == "capture" and cache.action(k1) == "plain"
    cache.store(k0, "g0")
    assert cache.action(k0) == "launch" and cache.get(k0) == "g0"
    cache.warmed(k1)
    cache.store(k1, "g1")
    assert len(cache) == 2 and released == []
    cache.store(k1, "g1b")  # a re-capture replaces and releases the old graph
    assert released == ["g1"]


def test_graph_cache_invalidation_on_new_shape() -> None:
    released: list[Any] = []
    cache = GraphCache(True, released.append)
    small, big = {"frame": (1, 3, 8, 8)}, {"frame": (1, 3, 16, 16)}
    for shapes, tag in ((small, "s"), (big, "b")):
        for parity in (0, 1):
            key = cache.key(parity, shapes)
            cache.warmed(key)
            cache.store(key, f"{tag}{parity}")
    cache.invalidate(big)
    assert sorted(released) == ["s0", "s1"]
    assert cache.action(cache.key(0, big)) == "launch"
    assert cache.action(cache.key(0, small)) == "plain"  # warm-up again after a shape change
    cache.invalidate()
    assert sorted(released) == ["b0", "b1", "s0", "s1"] and len(cache) == 0


def test_graph_cache_disable_and_off() -> None:
    released: list[Any] = []
    cache = GraphCache(True, released.append)
    key = cache.key(0, {"frame": (1, 3, 8, 8)})
    cache.warmed(key)
    cache.store(key, "g")
    cache.disable("capture failed (boom)")
    assert released == ["g"] and not cache.enabled and cache.disabled_reason == "capture failed (boom)"
    cache.warmed(key)
    assert cache.action(key) == "plain"
    off = GraphCache(False)
    off.warmed(key)
    assert off.action(key) == "plain" and off.disabled_reason and "cuda_graphs=False" in off.disabled_reason


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def test_parse_device() -> None:
    assert parse_device("auto") == 0
    assert parse_device("cuda") == 0
    assert parse_device("cuda:1") == 1
    assert parse_device("CUDA:2") == 2
    with pytest.raises(BackendError, match=r"tensorrt backend: device 'cpu' is not supported\. TensorRT runs on"):
        parse_device("cpu")
    with pytest.raises(UsageError, match=r"tensorrt backend: device 'tpu' is unknown\. Expected auto, cuda or cuda:N"):
        parse_device("tpu")


def test_check_frame_messages() -> None:
    ok = np.zeros((1, 3, 8, 12), np.float32)
    assert check_frame(ok, 4) is ok
    with pytest.raises(ShapeError, match=r"tensorrt step: frame is a list, not a numpy array\. Expected a float32"):
        check_frame([[0.0]], 4)
    with pytest.raises(ShapeError, match=r"tensorrt step: frame has shape \(8, 12, 3\)\. Expected \(1, 3, 8, 12\)"):
        check_frame(np.zeros((8, 12, 3), np.float32), 4, (1, 3, 8, 12))
    with pytest.raises(ShapeError, match=r"frame has shape \(1, 4, 8, 12\)\. Expected \(N, 3, Hp, Wp\)"):
        check_frame(np.zeros((1, 4, 8, 12), np.float32), 4)
    with pytest.raises(ShapeError, match=r"tensorrt step: frame has dtype float64\. Expected float32 in \[0, 1\]"):
        check_frame(np.zeros((1, 3, 8, 12)), 4)
    with pytest.raises(ShapeError, match=r"tensorrt step: frame is 10x12 \(batch 1\)\. Expected .* multiples of 4"):
        check_frame(np.zeros((1, 3, 10, 12), np.float32), 4)


def test_check_size_and_profile() -> None:
    check_size(1, 8, 12, 4)
    with pytest.raises(ShapeError, match=r"tensorrt reset: frame size 10x12 is not a multiple of 4\. Expected the"):
        check_size(1, 10, 12, 4)
    with pytest.raises(UsageError, match=r"tensorrt reset: batch 0 is not a positive integer"):
        check_size(0, 8, 8, 4)
    profile = ((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 64, 64))
    check_profile("frame", (1, 3, 64, 8), profile)
    check_profile("frame", (5, 3, 2, 2), None)
    with pytest.raises(ShapeError, match=r"tensorrt engine: input 'frame' of shape \(1, 3, 72, 8\) is outside "
                                         r"the engine's optimisation profile \(min \(1, 3, 8, 8\), "
                                         r"max \(1, 3, 64, 64\)\)\. Rebuild the engine"):
        check_profile("frame", (1, 3, 72, 8), profile)
    with pytest.raises(ShapeError, match="outside"):
        check_profile("frame", (2, 3, 8, 8), profile)


def test_check_io() -> None:
    iface = interface()
    check_io(iface, toy_info(iface))
    wrong = toy_info(iface)
    del wrong.tensors["is_flush"]
    with pytest.raises(BackendError, match=r"tensorrt engine: does not match the artifact \(its inputs are .*\)\. "
                                           r"Expected the engine of this artifact's trt graph"):
        check_io(iface, wrong)
    extra = toy_info(iface)
    extra.tensors["debug"] = TensorInfo("debug", False, np.dtype("float32"))  # would have no bound buffer
    with pytest.raises(BackendError, match=r"its outputs are \['acc_next', 'count_next', 'debug', "):
        check_io(iface, extra)
    mixed = toy_info(iface, dtypes={"acc_next": "float16"})
    with pytest.raises(BackendError, match=r"state 'acc' is float32 but 'acc_next' is float16"):
        check_io(iface, mixed)


def test_check_feeds() -> None:
    info = toy_info(interface())
    feeds = {n: np.zeros(s, info.dtype(n)) for n, s in input_shapes(interface(), 1, 8, 8).items()}
    assert set(check_feeds(feeds, info)) == set(feeds)
    with pytest.raises(UsageError, match=r"tensorrt run: feeds miss \['acc'\] and have unknown \['bogus'\]"):
        check_feeds({**{k: v for k, v in feeds.items() if k != "acc"}, "bogus": feeds["frame"]}, info)
    with pytest.raises(ShapeError, match=r"tensorrt run: input 'count' has dtype int64\. Expected int32"):
        check_feeds({**feeds, "count": feeds["count"].astype(np.int64)}, info)


# --------------------------------------------------------------------------------------------
# Engine selection
# --------------------------------------------------------------------------------------------


GPU = {"name": "NVIDIA H100", "compute_capability": "9.0"}


def cache_engine(artifact: Path, name: str, created: str = "2026-01-01T00:00:00+00:00",
                 shapes: tuple[tuple[int, int], ...] = ((8, 8), (16, 16), (64, 64)), **kw: Any) -> Path:
    """An engine and its sidecar in the artifact's cache, as `vdeblur build --backend tensorrt` writes them."""
    engine_dir = artifact / "engines" / "tensorrt" / "fp32"
    engine_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": 1, "key": name, "engine": f"{name}.plan", "precision": "fp32",
            "onnx": {"file": "model.onnx", "sha256": "b" * 64, "lowering": "trt"}, "tensorrt": "10.13.0", "gpu": GPU,
            "shapes": dict(zip(("min", "opt", "max"), [list(s) for s in shapes], strict=True)), "created": created}
    meta.update(kw)
    (engine_dir / f"{name}.plan").write_bytes(b"plan " + name.encode())
    (engine_dir / f"{name}.json").write_text(json.dumps(meta))
    return engine_dir / f"{name}.plan"


def test_select_engine_from_the_cache(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "artifact")
    old = cache_engine(artifact, "fp32-old")
    new = cache_engine(artifact, "fp32-new", created="2026-02-01T00:00:00+00:00")
    wide = cache_engine(artifact, "fp32-wide", created="2025-01-01T00:00:00+00:00",
                        shapes=((8, 8), (16, 16), (128, 128)))
    cache_engine(artifact, "fp32-other-trt", created="2027-01-01T00:00:00+00:00", tensorrt="10.14.0")

    # no shapes: the newest engine of this ONNX, TensorRT and GPU
    choice = select_engine(artifact, "fp32", trt_version="10.13.0", gpu=GPU)
    assert (choice.path, choice.source) == (new, "cache") and choice.meta and choice.meta["key"] == "fp32-new"
    # shapes: the engine built for exactly that profile (sizes padded to the manifest's multiple, 4)
    assert select_engine(artifact, "fp32", "8x8:16x16:128x128", trt_version="10.13.0", gpu=GPU).path == wide
    assert select_engine(artifact, "fp32", "5x7:13x16:61x64", trt_version="10.13.0", gpu=GPU).path == new
    assert old != new
    assert select_engine(artifact, "fp32", ((8, 8), (16, 16), (128, 128)), trt_version="10.13.0", gpu=GPU).path == wide

    # an explicit engine file is used as is
    given = tmp_path / "my.plan"
    given.write_bytes(b"x")
    assert select_engine(artifact, engine=given).source == "given"
    with pytest.raises(UsageError, match=r"nope\.plan: no such engine file\. Expected a serialized TensorRT engine"):
        select_engine(artifact, engine=tmp_path / "nope.plan")


def test_select_engine_never_builds(tmp_path: Path) -> None:
    """Without a fitting engine in the cache: a BackendError naming the `vdeblur build` command."""
    artifact = write_artifact(tmp_path / "artifact")
    with pytest.raises(BackendError, match=r"artifact: has no TensorRT engine of its fp32 graph built by "
                                           r"TensorRT 10\.13\.0 for NVIDIA H100 \(sm 9\.0\)\. The runtime does not "
                                           r"build engines: build one on this machine with `vdeblur build "
                                           r".*artifact --backend tensorrt --precision fp32`"):
        select_engine(artifact, "fp32", trt_version="10.13.0", gpu=GPU)
    cache_engine(artifact, "fp32-a")
    with pytest.raises(BackendError, match=r"with the profile 8x8:16x16:32x32 \(it has 1 other: fp32 8x8:16x16:64x64, "
                                           r"TensorRT 10\.13\.0, NVIDIA H100 \(sm 9\.0\)\)\. .*`vdeblur build .* "
                                           r"--precision fp32 --shapes 8x8:16x16:32x32`"):
        select_engine(artifact, "fp32", "8x8:16x16:32x32", trt_version="10.13.0", gpu=GPU)
    with pytest.raises(BackendError, match=r"built by TensorRT 10\.14\.0 .* \(it has 1 other"):
        select_engine(artifact, "fp32", trt_version="10.14.0", gpu=GPU)
    assert sorted(p.name for p in (artifact / "engines").rglob("*")) == ["fp32", "fp32-a.json", "fp32-a.plan",
                                                                          "tensorrt"]  # nothing was built


# --------------------------------------------------------------------------------------------
# Missing dependencies and open()
# --------------------------------------------------------------------------------------------


def test_missing_tensorrt_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt: not installed.*pip install 'vdeblur\[tensorrt\]'"):
        trt_backend.open(write_artifact(tmp_path / "a"))


def test_missing_pycuda_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(MissingDependencyError, match=r"pycuda: not installed.*vdeblur\[tensorrt\]"):
        trt_backend.PyCudaApi(0)


def test_open_argument_errors(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "a")
    with pytest.raises(UsageError, match=r"tensorrt backend: options \['threads'\] are unknown\. Expected some of"):
        trt_backend.open(artifact, threads=2)
    with pytest.raises(UsageError, match=r"tensorrt backend: precision 'fp64' is unknown"):
        trt_backend.open(artifact, precision="fp64")
    with pytest.raises(BackendError, match=r"device 'cpu' is not supported"):
        trt_backend.open(artifact, device="cpu")


def test_engine_info_reads_the_engine() -> None:
    iface = interface()
    want = toy_info(iface)
    engine = FakeEngine(FakeCuda(), iface, want)
    got = trt_backend.engine_info(FakeTrt(engine), engine)
    assert got == want
    assert got.inputs == iface["input_names"] and got.outputs == iface["output_names"]


def test_open_wires_engine_cuda_and_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = write_artifact(tmp_path / "artifact")
    iface = interface()
    cuda = FakeCuda()
    cuda.graph_error = None  # type: ignore[attr-defined]
    cuda.gpu = lambda: {"name": "fake", "compute_capability": "9.0"}  # type: ignore[attr-defined]
    fake_trt = FakeTrt(FakeEngine(cuda, iface, toy_info(iface)))
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(trt_backend, "PyCudaApi", lambda index, graphs=True: cuda)
    plan = tmp_path / "toy.plan"
    plan.write_bytes(b"serialized")
    with trt_backend.open(artifact, device="cuda:0", engine=plan, register_plugins=False) as backend:
        assert fake_trt.deserialized == [b"serialized"] and backend.engine_path == plan
        xs = frames(5)
        got = [backend.step(x) for x in xs]
        np.testing.assert_allclose(got[-1], toy_reference(xs, [False] * 5, True)[-1], rtol=1e-6)
        assert backend.cuda_graphs == "on" and cuda.calls["launch"] == 3
    assert cuda.closed

    # an engine TensorRT cannot deserialize: a clear error, and the CUDA side is released
    cuda.closed = False
    fake_trt.engine = None
    with pytest.raises(BackendError, match=r"toy\.plan: TensorRT cannot deserialize this engine .* rebuild it"):
        trt_backend.open(artifact, engine=plan, register_plugins=False)
    assert cuda.closed


def _fake_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCuda, FakeTrt]:
    """TensorRT 10.13.0 and one GPU (GPU), both fakes, behind open()."""
    iface = interface()
    cuda = FakeCuda()
    cuda.graph_error = None  # type: ignore[attr-defined]
    cuda.gpu = lambda: dict(GPU)  # type: ignore[attr-defined]
    fake_trt = FakeTrt(FakeEngine(cuda, iface, toy_info(iface)))
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(trt_backend, "PyCudaApi", lambda index, graphs=True: cuda)
    return cuda, fake_trt


def test_open_without_an_engine_names_vdeblur_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime never builds: no engine in the cache is an error that says how to build one."""
    artifact = write_artifact(tmp_path / "artifact")
    cuda, fake_trt = _fake_gpu_machine(monkeypatch)
    with pytest.raises(BackendError, match=r"artifact: has no TensorRT engine of its fp32 graph built by TensorRT "
                                           r"10\.13\.0 for NVIDIA H100 .*`vdeblur build .*artifact --backend tensorrt "
                                           r"--precision fp32`"):
        trt_backend.open(artifact, register_plugins=False)
    assert cuda.closed and fake_trt.deserialized == [] and not (artifact / "engines").exists()
    # the same through open_backend and Stream, with a profile asked for
    from vdeblur.runtime.backends import open_backend
    from vdeblur.runtime.stream import Stream

    with pytest.raises(BackendError, match=r"--precision fp32 --shapes 8x8:16x16:64x64`"):
        open_backend(artifact, "tensorrt", shapes="8x8:16x16:64x64", register_plugins=False)
    with pytest.raises(BackendError, match=r"`vdeblur build "):
        Stream(artifact, backend="tensorrt", register_plugins=False)
    assert not (artifact / "engines").exists()


def test_open_uses_the_cached_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = write_artifact(tmp_path / "artifact")
    cache_engine(artifact, "fp32-old")
    newest = cache_engine(artifact, "fp32-new", created="2026-03-01T00:00:00+00:00")
    cuda, fake_trt = _fake_gpu_machine(monkeypatch)
    with trt_backend.open(artifact, register_plugins=False) as backend:
        assert fake_trt.deserialized == [b"plan fp32-new"] and backend.engine_path == newest
        graph = backend.describe()
        assert graph["file"] == "engines/tensorrt/fp32/fp32-new.plan" and graph["built"] is True
        assert graph["device"] == "cuda:0" and "profile 8x8:16x16:64x64" in graph["notes"]
        xs = frames(3)
        np.testing.assert_allclose(backend.step(xs[0]), toy_reference(xs[:1], [False], True)[0], rtol=1e-6)
    assert cuda.closed and backend.closed


# --------------------------------------------------------------------------------------------
# CUDA graphs through the driver API (ctypes), on a fake libcuda
# --------------------------------------------------------------------------------------------


class FakeLibcuda:
    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    def _status(self, name: str) -> int:
        return 700 if self.fail == name else 0

    def cuStreamBeginCapture_v2(self, stream: Any, mode: int) -> int:
        self.calls.append(("begin", stream.value, mode))
        return self._status("begin")

    def cuStreamEndCapture(self, stream: Any, graph: Any) -> int:
        graph._obj.value = 0x1111
        self.calls.append(("end", stream.value))
        return self._status("end")

    def cuGraphInstantiateWithFlags(self, exec_: Any, graph: Any, flags: Any) -> int:
        exec_._obj.value = 0x2222
        self.calls.append(("instantiate", graph.value, flags.value))
        return self._status("instantiate")

    def cuGraphLaunch(self, exec_: Any, stream: Any) -> int:
        self.calls.append(("launch", exec_.value, stream.value))
        return self._status("launch")

    def cuGraphExecDestroy(self, exec_: Any) -> int:
        self.calls.append(("destroy_exec", exec_.value))
        return 0

    def cuGraphDestroy(self, graph: Any) -> int:
        self.calls.append(("destroy_graph", graph.value))
        return 0

    def cuGetErrorName(self, status: int, name: Any) -> int:
        name._obj.value = b"CUDA_ERROR_ILLEGAL_ADDRESS"
        return 0


def test_driver_graphs_call_sequence() -> None:
    lib = FakeLibcuda()
    g = DriverGraphs(lib)
    g.begin(0x5E)
    exec_ = g.end(0x5E)
    g.launch(exec_, 0x5E)
    g.destroy(exec_)
    assert exec_ == 0x2222
    assert lib.calls == [("begin", 0x5E, 1), ("end", 0x5E), ("instantiate", 0x1111, 0), ("destroy_graph", 0x1111),
                         ("launch", 0x2222, 0x5E), ("destroy_exec", 0x2222)]


def test_driver_graphs_errors() -> None:
    lib = FakeLibcuda(fail="instantiate")
    with pytest.raises(BackendError, match=r"CUDA graph: cuGraphInstantiateWithFlags failed "
                                           r"\(CUDA_ERROR_ILLEGAL_ADDRESS\)\. The step runs without CUDA graphs"):
        DriverGraphs(lib).end(1)
    assert ("destroy_graph", 0x1111) in lib.calls  # the template is freed on failure too
    with pytest.raises(BackendError, match="cuGraphLaunch failed"):
        DriverGraphs(FakeLibcuda(fail="launch")).launch(1, 2)

    class Old:
        pass

    with pytest.raises(BackendError, match=r"CUDA driver: cuStreamBeginCapture_v2 is missing\. Expected a driver"):
        DriverGraphs(Old())


def test_driver_graphs_with_ctypes_signatures() -> None:
    """The argtypes accept what the wrapper passes (c_void_p handles, byref outputs)."""
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p))

    def end(stream: Any, graph: Any) -> int:
        graph[0] = 0x42
        return 0

    class Lib(FakeLibcuda):
        pass

    lib = Lib()
    lib.cuStreamEndCapture = proto(end)  # type: ignore[method-assign, assignment]
    lib.cuStreamEndCapture.argtypes = DriverGraphs._SIGNATURES["cuStreamEndCapture"]  # type: ignore[assignment]
    assert DriverGraphs(lib).end(9) == 0x2222
    assert ("instantiate", 0x42, 0) in lib.calls


# --------------------------------------------------------------------------------------------
# TensorRTBackend on the fakes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda_graphs", [False, True])
@pytest.mark.parametrize("flag", [True, False])
def test_steps_match_the_recurrence(tmp_path: Path, cuda_graphs: bool, flag: bool) -> None:
    backend, cuda, engine = make_backend(tmp_path, flag=flag, cuda_graphs=cuda_graphs)
    assert isinstance(backend, Backend)
    assert backend.name == "tensorrt"
    assert backend.inputs == interface(flag)["input_names"] and backend.outputs == interface(flag)["output_names"]
    xs = frames(7)
    flushes = [False] * 5 + [True, True]
    backend.reset(1, 8, 12)
    got = [backend.step(x, fl) for x, fl in zip(xs, flushes, strict=True)]
    for k, (a, b) in enumerate(zip(got, toy_reference(xs, flushes, flag), strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=f"step {k}")
        assert a.dtype == np.float32 and a.shape == (1, 3, 8, 12)
    assert backend.steps == 7
    if cuda_graphs:
        # step 0 / 1: plain warm-up per parity; 2 / 3: capture + launch; 4..6: launch
        assert cuda.calls["capture"] == 2 and cuda.calls["launch"] == 5
        assert engine.contexts[0].executions == 4 and backend.cuda_graphs == "on"
    else:
        assert cuda.calls["capture"] == 0 and cuda.calls["launch"] == 0
        assert engine.contexts[0].executions == 7 and backend.cuda_graphs.startswith("off")


def test_only_frame_and_output_cross_the_bus(tmp_path: Path) -> None:
    backend, cuda, _ = make_backend(tmp_path, flag=True)
    xs = frames(6)
    backend.reset(1, 8, 12)
    before = Counter(cuda.calls)
    flushes = [False, False, False, False, True, True]
    for x, fl in zip(xs, flushes, strict=True):
        backend.step(x, fl)
    used = cuda.calls - before
    # one frame upload and one output download per step, plus the flag once when it changes to 1;
    # the states never move (no fills, no copies after reset)
    assert used["htod"] == 6 + 1 and used["dtoh"] == 6 and used["fill"] == 0
    # buffers are allocated at reset only
    live = set(cuda.mem)
    backend.step(xs[0])
    assert set(cuda.mem) == live


def test_output_is_copied_unless_asked(tmp_path: Path) -> None:
    backend, _, _ = make_backend(tmp_path)
    a = backend.step(frames(1)[0])
    b = backend.step(frames(1, seed=1)[0])
    assert not np.shares_memory(a, b)
    view_backend, _, _ = make_backend(tmp_path / "v", copy_output=False)
    a = view_backend.step(frames(1)[0])
    b = view_backend.step(frames(1, seed=1)[0])
    assert a is b  # the pinned buffer, overwritten by every step


def test_reset_same_size_restarts_and_keeps_graphs(tmp_path: Path) -> None:
    backend, cuda, _ = make_backend(tmp_path)
    xs = frames(6)
    backend.reset(1, 8, 12)
    for x in xs:
        backend.step(x)
    graphs = dict(cuda.graphs)
    assert len(graphs) == 2
    buffers = set(cuda.mem)
    backend.reset(1, 8, 12)
    assert backend.steps == 0 and set(cuda.mem) == buffers and cuda.graphs == graphs
    got = [backend.step(x) for x in xs]
    for a, b in zip(got, toy_reference(xs, [False] * 6, True), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert cuda.calls["capture"] == 2  # the graphs of the first run were reused


def test_new_size_reallocates_and_recaptures(tmp_path: Path) -> None:
    backend, cuda, engine = make_backend(tmp_path)
    backend.reset(1, 8, 12)
    for x in frames(4):
        backend.step(x)
    old_buffers, old_graphs = set(cuda.mem), set(cuda.graphs)
    assert len(old_graphs) == 2
    xs = frames(5, h=16, w=20, seed=3)
    got = [backend.step(x) for x in xs]  # a frame of another size resets the stream for it
    for a, b in zip(got, toy_reference(xs, [False] * 5, True), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not old_buffers & set(cuda.mem)  # freed (the fake never reuses addresses)
    assert not old_graphs & set(cuda.graphs) and cuda.calls["destroy"] == 2 and len(cuda.graphs) == 2
    assert engine.contexts[0].shapes["frame"] == (1, 3, 16, 20)
    assert engine.contexts[0].shapes["low"] == (1, 2, 4, 5)


def test_capture_failure_falls_back(tmp_path: Path) -> None:
    backend, cuda, engine = make_backend(tmp_path, fail_capture=True)
    xs = frames(6)
    with pytest.warns(RuntimeWarning, match=r"CUDA graph capture failed \(CUDA graph: cuStreamBeginCapture failed"):
        got = [backend.step(x) for x in xs]
    for a, b in zip(got, toy_reference(xs, [False] * 6, True), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert backend.cuda_graphs.startswith("off: capture failed")
    assert cuda.calls["launch"] == 0 and engine.contexts[0].executions == 6


def test_step_errors(tmp_path: Path) -> None:
    backend, _, _ = make_backend(tmp_path)
    with pytest.raises(ShapeError, match=r"tensorrt step: frame has dtype float64"):
        backend.step(np.zeros((1, 3, 8, 12)))
    with pytest.raises(ShapeError, match=r"tensorrt step: frame is 10x12"):
        backend.step(np.zeros((1, 3, 10, 12), np.float32))
    with pytest.raises(ShapeError, match=r"input 'frame' of shape \(1, 3, 72, 8\) is outside the engine's"):
        backend.reset(1, 72, 8)
    with pytest.raises(ShapeError, match=r"input 'frame' of shape \(2, 3, 8, 8\) is outside"):
        backend.step(np.zeros((2, 3, 8, 8), np.float32))  # the toy engine is built for batch 1
    # after failed resets the backend still works
    xs = frames(3)
    got = [backend.step(x) for x in xs]
    np.testing.assert_allclose(got[-1], toy_reference(xs, [False] * 3, True)[-1], rtol=1e-6)


def test_run_is_stateless(tmp_path: Path) -> None:
    backend, cuda, _ = make_backend(tmp_path)
    iface = interface()
    feeds = {p.input_name: p.initial_array() for p in plan_states(iface, 1, 8, 12)}
    feeds["frame"] = frames(1)[0]
    feeds["is_flush"] = np.zeros(1, np.int32)
    live = set(cuda.mem)
    out = backend.run(feeds)
    assert list(out) == iface["output_names"]
    want = toy_step(feeds, True)
    for name, value in want.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-6)
    assert set(cuda.mem) == live  # run() frees what it allocated
    # the stream (here: not started) is untouched; a step afterwards starts from the initial state
    np.testing.assert_allclose(backend.step(feeds["frame"]), want["output"], rtol=1e-6)


def test_close_releases_everything(tmp_path: Path) -> None:
    backend, cuda, _ = make_backend(tmp_path)
    with backend as b:
        for x in frames(5):
            b.step(x)
        assert cuda.mem and cuda.graphs
    assert not cuda.mem and not cuda.graphs and cuda.closed
    backend.close()  # idempotent
    with pytest.raises(BackendError, match=r"tensorrt backend: is closed\. Open a new one"):
        backend.step(frames(1)[0])


def test_stream_drives_the_backend(tmp_path: Path) -> None:
    """Stream (pads, resets, steps, flushes with the flag) on the backend's iface and protocol."""
    from vdeblur.runtime.stream import Stream

    backend, cuda, _ = make_backend(tmp_path, flag=True)
    rng = np.random.default_rng(5)
    hwc = rng.random((4, 7, 10, 3), dtype=np.float32) * 0.2
    with Stream(backend=backend) as s:
        got = [o for f in hwc for _, o in s.push(f)] + [o for _, o in s.flush()]
    assert cuda.closed
    padded = [np.pad(f.transpose(2, 0, 1)[None], [(0, 0), (0, 0), (0, 1), (0, 2)], mode="edge") for f in hwc]
    want = toy_reference([*padded, padded[-1]], [False] * 4 + [True], True)[1:]  # lookahead 1, one flush step
    assert len(got) == 4
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, np.clip(b[0, :, :7, :10].transpose(1, 2, 0), 0, 1), rtol=1e-6)


def test_engine_dtype_half_frames(tmp_path: Path) -> None:
    """An engine with float16 frame I/O: frames are converted on the pinned copy, outputs back."""
    iface = Interface(write_artifact(tmp_path / "artifact", flag=False))
    info = toy_info(iface.manifest.interface, dtypes={"frame": "float16", "output": "float16"})
    cuda = FakeCuda()
    backend = TensorRTBackend(iface, FakeEngine(cuda, iface.manifest.interface, info), info, cuda)
    xs = frames(3)
    got = [backend.step(x) for x in xs]
    assert got[-1].dtype == np.float32
    np.testing.assert_allclose(got[-1], toy_reference(xs, [False] * 3, False)[-1], atol=5e-3)


# --------------------------------------------------------------------------------------------
# The real thing: TensorRT on an NVIDIA GPU
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_tensorrt() -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (the [tensorrt] extra)")
    cuda = pytest.importorskip("pycuda.driver", reason="pycuda is not installed (the [tensorrt] extra)")
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as e:  # pycuda driver errors
        pytest.skip(f"no NVIDIA GPU visible ({e})")
    if count == 0:
        pytest.skip("no NVIDIA GPU visible (the CUDA driver reports none)")


PROFILE = "32x48:40x56:48x64"


@pytest.fixture(scope="module")
def trt_artifact(gpu_tensorrt: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vdeblur.build import build
    from vdeblur.export.artifact import export_artifact

    out = tmp_path_factory.mktemp("tensorrt") / "mtu"
    export_artifact("mtu2", out, overrides={"ch": 6, "rb_num": 1, "max_displacement": 3}, plugins="trt",
                    height=40, width=56, frames=3)
    build(out, "tensorrt", shapes=PROFILE)  # the runtime finds engines in the cache, never builds them
    return out


def _backend_stream(backend: TensorRTBackend, clip: np.ndarray, spec: Any) -> np.ndarray:
    """Like export.onnx.stream_onnx, on the backend: (N, T, 3, H, W), H and W padded already."""
    n, t_len, _, h, w = clip.shape
    backend.reset(n, h, w)
    outs = []
    for t in range(t_len + spec.flush.steps):
        out = backend.step(np.ascontiguousarray(clip[:, min(t, t_len - 1)]), flush=t >= t_len)
        if t >= spec.lookahead:
            outs.append(out)
    return np.stack(outs, axis=1)


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_engine_matches_onnxruntime(trt_artifact: Path, cuda_graphs: bool) -> None:
    from vdeblur.contract import manifest as manifest_mod
    from vdeblur.export.onnx import ort_session, stream_onnx, validation_clip
    from vdeblur.export.stepgraph import StepSpec
    from vdeblur.metrics import psnr

    man = manifest_mod.read(trt_artifact)
    spec = StepSpec.from_dict(man.interface)
    session = ort_session(trt_artifact / man.graph("fp32", "portable").file)
    with trt_backend.open(trt_artifact, shapes=PROFILE, cuda_graphs=cuda_graphs) as backend:
        for size in ((40, 56), (48, 64), (40, 56)):  # a new size re-allocates and re-captures
            clip = validation_clip(6, *size).numpy()
            want = stream_onnx(session, spec, clip)
            got = _backend_stream(backend, clip, spec)
            assert got.shape == want.shape
            assert psnr(got, want) >= 40.0, f"{size}: {psnr(got, want):.2f} dB"
        if cuda_graphs:  # captured per parity and size, and replayed (a failed capture would say why)
            assert backend.cuda_graphs == "on", backend.cuda_graphs
        else:
            assert backend.cuda_graphs.startswith("off")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_graphs_equal_plain_launches_and_stream(trt_artifact: Path) -> None:
    from vdeblur.export.onnx import validation_clip
    from vdeblur.metrics import psnr
    from vdeblur.runtime.stream import Stream

    clip = validation_clip(8, 40, 56).numpy()[0]  # (T, 3, H, W)
    outs = {}
    for graphs in (True, False):
        with trt_backend.open(trt_artifact, shapes=PROFILE, cuda_graphs=graphs) as backend:
            backend.reset(1, 40, 56)
            outs[graphs] = np.stack([backend.step(f[None]) for f in clip])
            feeds = {p.input_name: p.initial_array() for p in plan_states(backend.interface, 1, 40, 56)}
            ran = backend.run({**feeds, backend.interface["frame_input"]: clip[0][None]})
            backend.reset(1, 40, 56)
            np.testing.assert_allclose(backend.step(clip[0][None]), ran[backend.interface["frame_output"]],
                                       atol=1e-5)
    np.testing.assert_allclose(outs[True], outs[False], atol=1e-5)

    # Stream on the tensorrt backend (frames of a size that needs padding) vs onnxruntime
    frames_hwc = clip[:, :, :38, :54].transpose(0, 2, 3, 1)
    results = {}
    for name in ("tensorrt", "onnxruntime"):
        options = {"shapes": PROFILE} if name == "tensorrt" else {}
        with Stream(trt_artifact, backend=name, **options) as s:
            results[name] = [o for f in frames_hwc for _, o in s.push(f)] + [o for _, o in s.flush()]
    assert len(results["tensorrt"]) == len(results["onnxruntime"]) == len(frames_hwc)
    assert psnr(np.stack(results["tensorrt"]), np.stack(results["onnxruntime"])) >= 40.0
