"""The TensorRT-RTX backend (vdeblur/runtime/backends/tensorrt_rtx.py) and its cuda-python CUDA side.

Running an RTX engine needs an RTX GPU: here the engine selection from the cache, the errors, and
the open() flow on the fakes of tests/runtime/test_backend_tensorrt.py (the state handling is the
TensorRT backend's, tested there); CudaPythonApi on a fake of cuda-python's driver module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.runtime.test_backend_tensorrt import (
    FakeCuda,
    FakeEngine,
    FakeTrt,
    frames,
    interface,
    toy_info,
    toy_reference,
    write_artifact,
)
from vdeblur.errors import BackendError, MissingDependencyError, UsageError
from vdeblur.runtime.backends import BACKENDS
from vdeblur.runtime.backends import tensorrt_rtx as rtx_backend
from vdeblur.runtime.backends.tensorrt import Fill
from vdeblur.runtime.backends.tensorrt.cuda import CudaPythonApi

RTX_GPU = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}


def cache_rtx_engine(artifact: Path, name: str, targets: list[str], created: str = "2026-01-01T00:00:00+00:00",
                     sha: str = "b" * 64, version: str = "1.7.1.116") -> Path:
    directory = artifact / "engines" / "tensorrt-rtx" / "fp32"
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": 1, "key": name, "engine": f"{name}.plan", "precision": "fp32", "backend": "tensorrt-rtx",
            "onnx": {"file": "x.onnx", "sha256": sha, "lowering": "trt"}, "tensorrt": version, "gpu": None,
            "compute_capabilities": targets, "shapes": {"min": [8, 8], "opt": [16, 16], "max": [64, 64]},
            "created": created}
    (directory / f"{name}.plan").write_bytes(b"rtx " + name.encode())
    (directory / f"{name}.json").write_text(json.dumps(meta))
    return directory / f"{name}.plan"


def test_backend_is_listed() -> None:
    assert "tensorrt-rtx" in BACKENDS


def test_select_engine_by_version_and_compute_capability(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "artifact")
    ada = cache_rtx_engine(artifact, "fp32-ada", ["8.6", "8.9"])
    portable = cache_rtx_engine(artifact, "fp32-portable", ["8.0", "8.6", "8.9", "12.0"], sha="a" * 64,
                                created="2026-02-01T00:00:00+00:00")
    cache_rtx_engine(artifact, "fp32-old", ["8.9"], version="1.6.0", created="2027-01-01T00:00:00+00:00")
    pick = rtx_backend.select_engine(artifact, "fp32", trt_version="1.7.1.116", compute_capability="8.9")
    assert pick.path == portable and pick.source == "cache"  # the newest fitting: either lowering's graph
    assert rtx_backend.select_engine(artifact, "fp32", trt_version="1.7.1.116", compute_capability="12.0").path \
        == portable
    assert rtx_backend.select_engine(artifact, "fp32", "8x8:16x16:64x64", trt_version="1.7.1.116",
                                     compute_capability="8.6").path in (ada, portable)
    with pytest.raises(BackendError, match=r"has no TensorRT-RTX engine of its fp32 graph built by TensorRT-RTX "
                                           r"1\.7\.1\.116 for compute capability 7\.5 \(it has 3 others: .*\)\. The "
                                           r"runtime does not build engines: build one \(on any machine\) with "
                                           r"`vdeblur build .*artifact --backend tensorrt-rtx --precision fp32 "
                                           r"--compute-capability 7\.5`"):
        rtx_backend.select_engine(artifact, "fp32", trt_version="1.7.1.116", compute_capability="7.5")
    with pytest.raises(UsageError, match=r"nope\.plan: no such engine file\. Expected a serialized TensorRT-RTX"):
        rtx_backend.select_engine(artifact, engine=tmp_path / "nope.plan")


def _fake_rtx_machine(monkeypatch: pytest.MonkeyPatch, gpu: dict[str, str]) -> tuple[FakeCuda, FakeTrt, list[int]]:
    iface = interface()
    cuda = FakeCuda()
    cuda.graph_error = None  # type: ignore[attr-defined]
    cuda.gpu = lambda: dict(gpu)  # type: ignore[attr-defined]
    fake_trt = FakeTrt(FakeEngine(cuda, iface, toy_info(iface)))
    fake_trt.__version__ = "1.7.1.116"  # type: ignore[attr-defined]
    registered: list[int] = []
    monkeypatch.setattr(rtx_backend, "import_tensorrt_rtx", lambda: fake_trt)
    monkeypatch.setattr(rtx_backend, "CudaPythonApi", lambda index, graphs=True: cuda)
    import importlib

    lowering = importlib.import_module("vdeblur.plugins.lowering")  # the package binds `lowering` to a function
    monkeypatch.setattr(lowering, "register_tensorrt_rtx_plugins", lambda: registered.append(1))
    return cuda, fake_trt, registered


def test_open_runs_the_cached_engine_with_the_tensorrt_state_handling(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = write_artifact(tmp_path / "artifact")
    engine = cache_rtx_engine(artifact, "fp32-ada", ["8.6", "8.9"])
    cuda, fake_trt, registered = _fake_rtx_machine(monkeypatch, RTX_GPU)
    from vdeblur.runtime.backends import open_backend

    with open_backend(artifact, "tensorrt-rtx") as backend:
        assert isinstance(backend, rtx_backend.TensorRTRtxBackend) and backend.name == "tensorrt-rtx"
        assert fake_trt.deserialized == [b"rtx fp32-ada"] and backend.engine_path == engine
        assert registered == [1]  # the plugin creators are registered before deserialising
        xs = frames(5)
        got = [backend.step(x) for x in xs]
        np.testing.assert_allclose(got[-1], toy_reference(xs, [False] * 5, True)[-1], rtol=1e-6)
        assert backend.cuda_graphs == "on" and cuda.calls["launch"] == 3
        assert backend.describe()["file"] == "engines/tensorrt-rtx/fp32/fp32-ada.plan"
    assert cuda.closed


def test_open_refuses_a_data_center_gpu_and_never_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    artifact = write_artifact(tmp_path / "artifact")
    cuda, fake_trt, _ = _fake_rtx_machine(monkeypatch, {"name": "NVIDIA H200", "compute_capability": "9.0"})
    with pytest.raises(BackendError, match=r"NVIDIA H200 \(compute capability 9\.0\) is not a TensorRT-RTX GPU\. "
                                           r".*use --backend tensorrt"):
        rtx_backend.open(artifact)
    assert cuda.closed and fake_trt.deserialized == []
    cuda.closed = False
    cuda.gpu = lambda: dict(RTX_GPU)  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match=r"`vdeblur build .* --backend tensorrt-rtx --precision fp32 "
                                           r"--compute-capability 8\.9`"):
        rtx_backend.open(artifact)
    assert cuda.closed and not (artifact / "engines").exists()
    with pytest.raises(UsageError, match=r"tensorrt-rtx backend: options \['threads'\] are unknown"):
        rtx_backend.open(artifact, threads=2)


def test_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt_rtx: not installed.*vdeblur\[tensorrt-rtx\]"):
        rtx_backend.open(write_artifact(tmp_path / "a"))
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(MissingDependencyError, match=r"cuda-python: not installed.*vdeblur\[tensorrt-rtx\]"):
        CudaPythonApi(0)


# --------------------------------------------------------------------------------------------
# CudaPythonApi on a fake cuda.bindings.driver
# --------------------------------------------------------------------------------------------


class FakeDriver:
    """What CudaPythonApi calls, returning (status, value) tuples as cuda-python does."""

    class CUdevice_attribute:  # noqa: N801 - the driver's name
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = "major"
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = "minor"

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.calls: list[tuple[Any, ...]] = []
        self.memory: dict[int, bytearray] = {}
        self.hosts: list[Any] = []
        self.next = 0x1000

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> tuple[int, ...]:
            self.calls.append((name, *args))
            return (0,)
        return call

    def cuInit(self, flags: int) -> tuple[int]:  # noqa: N802
        return (0,)

    def cuDeviceGetCount(self) -> tuple[int, int]:  # noqa: N802
        return 0, self.count

    def cuDeviceGet(self, i: int) -> tuple[int, int]:  # noqa: N802
        return 0, i

    def cuDevicePrimaryCtxRetain(self, dev: int) -> tuple[int, str]:  # noqa: N802
        return 0, "ctx"

    def cuStreamCreate(self, flags: int) -> tuple[int, int]:  # noqa: N802
        assert flags == 1  # non-blocking
        return 0, 0x5

    def cuDeviceGetName(self, n: int, dev: int) -> tuple[int, bytes]:  # noqa: N802
        return 0, b"NVIDIA GeForce RTX 4090" + b"\0" * 10

    def cuDeviceGetAttribute(self, attr: str, dev: int) -> tuple[int, int]:  # noqa: N802
        return 0, 8 if attr == "major" else 9

    def cuMemAlloc(self, n: int) -> tuple[int, int]:  # noqa: N802
        self.next += 0x1000
        self.memory[self.next] = bytearray(n)
        return 0, self.next

    def cuMemHostAlloc(self, n: int, flags: int) -> tuple[int, int]:  # noqa: N802
        import ctypes

        buf = (ctypes.c_char * n)()
        self.hosts.append(buf)
        return 0, ctypes.addressof(buf)

    def cuMemcpyHtoDAsync(self, dst: int, src: int, n: int, stream: int) -> tuple[int]:  # noqa: N802
        import ctypes

        self.memory[dst][:n] = ctypes.string_at(src, n)
        return (0,)

    def cuMemcpyDtoHAsync(self, dst: int, src: int, n: int, stream: int) -> tuple[int]:  # noqa: N802
        import ctypes

        ctypes.memmove(dst, bytes(self.memory[src][:n]), n)
        return (0,)


def test_cuda_python_api_on_a_fake_driver() -> None:
    d = FakeDriver()
    api = CudaPythonApi(0, graphs=False, driver=d)
    assert api.gpu() == {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
    assert api.stream_handle == 0x5
    with api.activate():
        ptr = api.alloc(16)
        host = api.pinned((4,), np.dtype(np.float32))
        host[...] = [1, 2, 3, 4]
        api.htod(ptr, host)
        back = api.pinned((4,), np.dtype(np.float32))
        api.dtoh(back, ptr)
        api.synchronize()
        np.testing.assert_array_equal(back, [1, 2, 3, 4])
        api.fill(ptr, Fill("memset32", 7, 4))
        api.fill(ptr, Fill("copy", 0, 0, np.arange(4, dtype=np.float32)))
    names = [c[0] for c in d.calls]
    assert names[:2] == ["cuCtxPushCurrent", "cuCtxPopCurrent"]  # the stream is made in the device's context
    assert ("cuMemsetD32Async", ptr, 7, 4, 0x5) in d.calls and "cuStreamSynchronize" in names
    with pytest.raises(BackendError, match=r"CUDA graph: not available"):
        api.begin_capture()
    api.close()
    api.close()  # twice: a no-op
    names = [c[0] for c in d.calls]
    assert names.count("cuMemFreeHost") == 3 and ("cuMemFree", ptr) in d.calls
    assert names[-1] == "cuDevicePrimaryCtxRelease" and "cuStreamDestroy" in names
    with pytest.raises(UsageError, match=r"device cuda:1 does not exist"):
        CudaPythonApi(1, graphs=False, driver=FakeDriver())
    with pytest.raises(BackendError, match=r"the CUDA driver reports no GPU"):
        CudaPythonApi(0, graphs=False, driver=FakeDriver(count=0))


@pytest.mark.gpu
@pytest.mark.tensorrt_rtx
def test_engine_runs_on_an_rtx_gpu(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """On an RTX GPU: build, open and step an mtu engine; compare with ONNX Runtime."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (the [tensorrt-rtx] extra)")
    from vdeblur.build.tensorrt import probe_gpu
    from vdeblur.contract.engines import RTX_COMPUTE_CAPABILITIES

    gpu, why = probe_gpu()
    if gpu is None or gpu["compute_capability"] not in RTX_COMPUTE_CAPABILITIES:
        pytest.skip(f"needs an NVIDIA RTX GPU ({why or gpu})")
    import shutil

    from vdeblur.build import build
    from vdeblur.runtime.backends import open_backend

    artifact = tmp_path / "mtu"
    shutil.copytree(request.getfixturevalue("mtu_artifact"), artifact, ignore=shutil.ignore_patterns("engines"))
    build(artifact, "tensorrt-rtx", "fp32", shapes="40x56:40x56:64x64", compute_capability=gpu["compute_capability"])
    xs = np.random.default_rng(0).random((4, 1, 3, 40, 56), dtype=np.float32)
    with open_backend(artifact, "tensorrt-rtx") as engine, open_backend(artifact, "onnxruntime") as reference:
        for x in xs:
            np.testing.assert_allclose(engine.step(x), reference.step(x), atol=2e-3)
