"""The CUDA calls of the TensorRT backend, behind one small interface (:class:`CudaApi`).

:class:`PyCudaApi` implements it on pycuda (the ``[tensorrt]`` extra): the device's primary context
(shared with TensorRT's runtime API), one non-blocking stream, device allocations by address,
pinned numpy arrays. CUDA graphs go through the CUDA driver library with ctypes
(:class:`DriverGraphs`), because pycuda has no graph API. The tests drive the backend with fakes
of :class:`CudaApi` and of libcuda. Nothing here imports pycuda at module import.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from vdeblur.contract.device import load_libcuda
from vdeblur.errors import BackendError, UsageError, missing_dependency
from vdeblur.runtime.backends.tensorrt.plan import Fill, Shape

NEEDS = ("Install the extra with `pip install 'vdeblur[tensorrt]'` on a machine with an NVIDIA GPU and its driver, "
         "or use --backend onnxruntime.")


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
    try:
        return load_libcuda()
    except OSError as e:
        raise BackendError(f"CUDA driver: libcuda cannot be loaded ({e}). Expected the NVIDIA driver; "
                           "CUDA graphs need it.") from e


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


def check_device(count: int, device: int, backend: str, needs: str) -> None:
    """The driver sees a GPU, and ``cuda:device`` is one of them (both CUDA bindings ask this)."""
    if count == 0:
        raise BackendError(f"{backend} backend: the CUDA driver reports no GPU. {needs}")
    if device >= count:
        raise UsageError(f"{backend} backend: device cuda:{device} does not exist. "
                         f"Expected cuda:0 to cuda:{count - 1}.")


class _GraphCalls:
    """The CUDA-graph half of :class:`CudaApi`, the same for every CUDA binding: capture on the
    stream, launch, destroy, through the driver API (:class:`DriverGraphs`). Subclasses set
    ``_graphs`` (None when graphs are unavailable, ``graph_error`` saying why) and ``stream_handle``."""

    _graphs: DriverGraphs | None
    graph_error: str | None
    stream_handle: int

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


class PyCudaApi(_GraphCalls):
    """:class:`CudaApi` on pycuda: the device's primary context (shared with TensorRT's runtime
    API), one non-blocking stream, device allocations by address, pinned numpy arrays."""

    def __init__(self, device: int = 0, graphs: bool = True) -> None:
        cuda = import_pycuda()
        self._cuda = cuda
        try:
            cuda.init()
            count = cuda.Device.count()
        except Exception as e:  # pycuda.driver.Error and its subclasses
            raise BackendError(f"tensorrt backend: no usable NVIDIA GPU ({first_line(e)}). {NEEDS}") from e
        check_device(count, device, "tensorrt", NEEDS)
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
        """Name and compute capability, as engine sidecars record them (:func:`vdeblur.contract.device.nvidia_gpus`)."""
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


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------------------------
# cuda-python (the TensorRT-RTX backend: the [tensorrt-rtx] extra installs it from wheels)
# --------------------------------------------------------------------------------------------

RTX_NEEDS = ("Install the extra with `pip install 'vdeblur[tensorrt-rtx]'` on a machine with an NVIDIA RTX GPU and "
             "its driver, or use --backend onnxruntime.")


def import_cuda_python() -> Any:
    """``cuda.bindings.driver`` (cuda-python), or an error naming the [tensorrt-rtx] extra."""
    try:
        from cuda.bindings import driver
    except ImportError as e:
        raise missing_dependency("cuda-python", "tensorrt-rtx",
                                 "the TensorRT-RTX backend (device memory and streams)") from e
    return driver


class CudaPythonApi(_GraphCalls):
    """:class:`CudaApi` on cuda-python's driver API (``cuda.bindings.driver``), as :class:`PyCudaApi`
    on pycuda: the device's primary context, one non-blocking stream, device allocations by address,
    pinned numpy arrays (freed at :meth:`close`), CUDA graphs through :class:`DriverGraphs`.

    driver: ``cuda.bindings.driver`` or a fake; graphs_lib: the libcuda for :class:`DriverGraphs`."""

    def __init__(self, device: int = 0, graphs: bool = True, driver: Any = None, graphs_lib: Any = None) -> None:
        d = driver if driver is not None else import_cuda_python()
        self._d = d
        try:
            self._check(d.cuInit(0), "cuInit")
            count = int(self._check(d.cuDeviceGetCount(), "cuDeviceGetCount"))
        except BackendError as e:
            raise BackendError(f"tensorrt-rtx backend: no usable NVIDIA GPU ({e}). {RTX_NEEDS}") from e
        except Exception as e:  # the driver library itself missing (cuda-python raises its own types)
            raise BackendError(f"tensorrt-rtx backend: no usable NVIDIA GPU ({first_line(e)}). {RTX_NEEDS}") from e
        check_device(count, device, "tensorrt-rtx", RTX_NEEDS)
        self.device = self._check(d.cuDeviceGet(device), "cuDeviceGet")
        self._ctx: Any = self._check(d.cuDevicePrimaryCtxRetain(self.device), "cuDevicePrimaryCtxRetain")
        self._allocs: set[int] = set()
        self._hosts: dict[int, int] = {}  # id(array) -> pinned host address
        self._graphs: DriverGraphs | None = None
        with self.activate():
            self._stream: Any = self._check(d.cuStreamCreate(CU_STREAM_NON_BLOCKING), "cuStreamCreate")
        self.stream_handle = int(self._stream)
        self.graph_error: str | None = None
        if graphs:
            try:
                self._graphs = DriverGraphs(graphs_lib)
            except BackendError as e:
                self.graph_error = str(e)

    def _check(self, result: Any, what: str) -> Any:
        status, *rest = result if isinstance(result, tuple) else (result,)
        if int(status) != 0:
            name = getattr(status, "name", None) or f"CUresult {int(status)}"
            raise BackendError(f"CUDA driver: {what} failed ({name}). Expected a working NVIDIA GPU and driver.")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else tuple(rest)

    def gpu(self) -> dict[str, str]:
        """Name and compute capability, as engine sidecars record them."""
        d = self._d
        raw = self._check(d.cuDeviceGetName(256, self.device), "cuDeviceGetName")
        text = bytes(raw) if isinstance(raw, (bytes, bytearray)) else str(raw).encode()
        name = text.split(b"\0", 1)[0].decode(errors="replace")
        attr = d.CUdevice_attribute
        major = self._check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.device),
                            "cuDeviceGetAttribute")
        minor = self._check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.device),
                            "cuDeviceGetAttribute")
        return {"name": name, "compute_capability": f"{int(major)}.{int(minor)}"}

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self._check(self._d.cuCtxPushCurrent(self._ctx), "cuCtxPushCurrent")
        try:
            yield
        finally:
            self._check(self._d.cuCtxPopCurrent(), "cuCtxPopCurrent")

    def alloc(self, nbytes: int) -> int:
        ptr = int(self._check(self._d.cuMemAlloc(max(int(nbytes), 1)), "cuMemAlloc"))
        self._allocs.add(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        if ptr in self._allocs:
            self._allocs.discard(ptr)
            self._check(self._d.cuMemFree(ptr), "cuMemFree")

    def pinned(self, shape: Shape, dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        address = int(self._check(self._d.cuMemHostAlloc(nbytes, 0), "cuMemHostAlloc"))
        buffer = (ctypes.c_char * nbytes).from_address(address)
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(buffer, dtype=dtype, count=count).reshape(tuple(shape))
        self._hosts[id(array)] = address
        return array

    def htod(self, ptr: int, host: np.ndarray) -> None:
        self._check(self._d.cuMemcpyHtoDAsync(ptr, host.ctypes.data, host.nbytes, self._stream), "cuMemcpyHtoDAsync")

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        self._check(self._d.cuMemcpyDtoHAsync(host.ctypes.data, ptr, host.nbytes, self._stream), "cuMemcpyDtoHAsync")

    def fill(self, ptr: int, fill: Fill) -> None:
        if fill.kind == "copy":
            assert fill.array is not None
            staging = self.pinned(fill.array.shape, fill.array.dtype)
            np.copyto(staging, fill.array)
            self.htod(ptr, staging)
            self.synchronize()
            self._check(self._d.cuMemFreeHost(self._hosts.pop(id(staging))), "cuMemFreeHost")
            return
        name = {"memset8": "cuMemsetD8Async", "memset16": "cuMemsetD16Async", "memset32": "cuMemsetD32Async"}[fill.kind]
        self._check(getattr(self._d, name)(ptr, fill.value, fill.count, self._stream), name)

    def synchronize(self) -> None:
        self._check(self._d.cuStreamSynchronize(self._stream), "cuStreamSynchronize")

    def close(self) -> None:
        if self._ctx is None:
            return
        with self.activate():
            self.synchronize()
            for ptr in list(self._allocs):
                self.free(ptr)
            for address in self._hosts.values():
                self._check(self._d.cuMemFreeHost(address), "cuMemFreeHost")
            self._hosts.clear()
            self._check(self._d.cuStreamDestroy(self._stream), "cuStreamDestroy")
            self._stream = None
        self._check(self._d.cuDevicePrimaryCtxRelease(self.device), "cuDevicePrimaryCtxRelease")
        self._ctx = None
