"""TensorRT-RTX plugins, generated from the OpSpecs (tensorrt_rtx and cuda-python imported lazily).

TensorRT-RTX imports only ``IPluginV3`` plugins made by an ``IPluginCreatorV3One`` creator (it
refuses quickly deployable plugins and has no AOT plugin interface), so an RTX engine's plugin
layers run their own ``enqueue`` at run time, in the process that loads the engine. For every op,
:func:`plugin_classes` builds from the spec:

- the creator (``IPluginCreatorV3One``), registered in namespace ``vdeblur`` under the op's plugin
  name, version "1", with one field per attribute in spec order (INT -> INT32, FLOAT -> FLOAT32,
  STRING -> CHAR). TensorRT-RTX's ONNX parser finds it by the node's op_type, domain and
  plugin_version, and passes only the declared fields, in the creator's order; a STRING arrives
  with its terminating NUL, which :func:`read_fields` strips. ``create_plugin`` receives the ONNX
  node's name (kept as the layer name);
- the plugin (``IPluginV3`` + ``IPluginV3OneCore/OneBuild/OneRuntime``): output types and shapes
  from the spec's rules, the shape rules run on TensorRT's ``IExprBuilder`` through :class:`Expr`;
  FP32 or FP16 linear inputs of one type (a fixed-dtype output keeps its type); the attributes
  serialised into the engine as the same fields; ``enqueue`` launches the spec's Triton kernel,
  compiled to PTX by :func:`vdeblur.plugins.aot.compile_op` for the GPU it runs on (attributes baked
  in as constexprs), with the spec's launch plan on the concrete shapes (:class:`Launcher`,
  cuda-python's driver API).

A CPU-only TensorRT-RTX build calls everything but ``enqueue`` (and ``on_shape_change``,
``attach_to_context``, ``set_tactic``), so engines build on any machine; the kernel is compiled and
loaded on the GPU at the first shape the engine runs with.

:func:`import_tensorrt_rtx` also works around a packaging bug of the tensorrt-rtx 1.7 wheels: the
ONNX parser dlopens ``libtensorrt_rtx.so`` while the wheel ships only ``libtensorrt_rtx.so.1``, and the
process aborts at the first plugin node without the link (see :func:`ensure_parser_library`).
Registration is idempotent: a creator already registered in this process is left as it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vdeblur.errors import BackendError, UsageError, missing_dependency
from vdeblur.plugins.spec import FLOAT, INT, STRING, OpSpec, int_cdiv

NAMESPACE = "vdeblur"
VERSION = "1"
PARSER_LIBRARY = "libtensorrt_rtx.so"  # the name TensorRT-RTX's ONNX parser dlopens
SONAME = "libtensorrt_rtx.so.1"  # the file the tensorrt-rtx-cu13-libs wheel ships
_FIELD_TYPES = {INT: "INT32", FLOAT: "FLOAT32", STRING: "CHAR"}
_DTYPES = {"float32": "float32", "float16": "float16"}  # dtype name -> tensorrt_rtx attribute
_REGISTERED: dict[str, Any] = {}  # spec id -> creator (kept alive: TensorRT holds a pointer to it)
_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Importing tensorrt_rtx
# --------------------------------------------------------------------------------------------


def import_tensorrt_rtx(purpose: str = "building or running a TensorRT-RTX engine") -> Any:
    """The ``tensorrt_rtx`` module, with its ONNX parser able to load plugins
    (:func:`ensure_parser_library`); a MissingDependencyError naming the [tensorrt-rtx] extra."""
    try:
        import tensorrt_rtx
    except ImportError as e:
        raise missing_dependency("tensorrt_rtx", "tensorrt-rtx", purpose) from e
    ensure_parser_library()
    return tensorrt_rtx


def libs_dir() -> Path | None:
    """The directory of the tensorrt-rtx libraries wheel (``tensorrt_rtx_libs``), or None."""
    try:
        import tensorrt_rtx_libs
    except ImportError:
        return None
    return Path(tensorrt_rtx_libs.__file__).resolve().parent


def ensure_parser_library(directory: Path | None = None, env: dict[str, str] | None = None) -> Path | None:
    """Make sure TensorRT-RTX's ONNX parser finds ``libtensorrt_rtx.so``; returns where it is.

    The parser dlopens ``libtensorrt_rtx.so`` at the first plugin node; the wheel ships only
    ``libtensorrt_rtx.so.1``, and without the unversioned name the process aborts (``terminate
    called without an active exception``). dlopen searches the parser's RPATH ($ORIGIN: the
    wheel's directory) and the LD_LIBRARY_PATH the process started with, so a preload (ctypes,
    RTLD_GLOBAL) does not help: this creates the link ``libtensorrt_rtx.so -> libtensorrt_rtx.so.1``
    in the wheel's directory (once; atomically) unless a directory on LD_LIBRARY_PATH already holds
    the name. Raises BackendError when the directory is not writable, saying how to fix it.

    directory: the libraries' directory (default: :func:`libs_dir`; None there: nothing to do, the
    libraries come from elsewhere); env: the environment to read LD_LIBRARY_PATH from (os.environ).
    """
    directory = directory if directory is not None else libs_dir()
    if directory is None or not (directory / SONAME).exists():
        return None
    link = directory / PARSER_LIBRARY
    if link.exists():
        return link
    for entry in (env if env is not None else os.environ).get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if entry and (Path(entry) / PARSER_LIBRARY).exists():
            return Path(entry) / PARSER_LIBRARY
    tmp = directory / f".{PARSER_LIBRARY}.{os.getpid()}.{threading.get_ident()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(SONAME, tmp)
        os.replace(tmp, link)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if link.exists():  # another process made it meanwhile
            return link
        raise BackendError(
            f"tensorrt_rtx: its ONNX parser loads {PARSER_LIBRARY}, which the tensorrt-rtx wheel does not ship "
            f"(only {SONAME}), and the link cannot be created in {directory} ({e.strerror or e}). Expected the link: "
            f"run `ln -s {SONAME} {link}` once, or start the process with LD_LIBRARY_PATH set to a directory "
            f"holding `{PARSER_LIBRARY} -> {directory / SONAME}`; without it the process aborts at the first "
            "plugin node."
        ) from e
    return link


# --------------------------------------------------------------------------------------------
# Shape rules on TensorRT's IExprBuilder
# --------------------------------------------------------------------------------------------


class Expr:
    """A TensorRT ``IDimensionExpr`` with the arithmetic the spec's shape rules use (+ - * // and
    :meth:`cdiv`); ints mix in as ``builder.constant``. ``trt``: the tensorrt(_rtx) module."""

    def __init__(self, trt: Any, builder: Any, expr: Any) -> None:
        self.trt, self.builder, self.expr = trt, builder, expr

    @classmethod
    def of(cls, trt: Any, builder: Any, value: Any) -> Expr:
        if isinstance(value, Expr):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"tensorrt-rtx plugin: a shape rule produced {value!r}. Expected ints and "
                             "dimension expressions (+ - * // cdiv only).")
        return cls(trt, builder, builder.constant(int(value)))

    def _op(self, name: str, a: Any, b: Any) -> Expr:
        a, b = Expr.of(self.trt, self.builder, a), Expr.of(self.trt, self.builder, b)
        return Expr(self.trt, self.builder,
                    self.builder.operation(getattr(self.trt.DimensionOperation, name), a.expr, b.expr))

    def __add__(self, other: Any) -> Expr:
        return self._op("SUM", self, other)

    def __radd__(self, other: Any) -> Expr:
        return self._op("SUM", other, self)

    def __sub__(self, other: Any) -> Expr:
        return self._op("SUB", self, other)

    def __rsub__(self, other: Any) -> Expr:
        return self._op("SUB", other, self)

    def __mul__(self, other: Any) -> Expr:
        return self._op("PROD", self, other)

    def __rmul__(self, other: Any) -> Expr:
        return self._op("PROD", other, self)

    def __floordiv__(self, other: Any) -> Expr:
        return self._op("FLOOR_DIV", self, other)

    def __rfloordiv__(self, other: Any) -> Expr:
        return self._op("FLOOR_DIV", other, self)

    def cdiv(self, other: Any) -> Expr:
        return self._op("CEIL_DIV", self, other)


def output_dims(trt: Any, spec: OpSpec, attrs: dict[str, Any], inputs: Sequence[Any], builder: Any) -> list[Any]:
    """``get_output_shapes``: one ``DimsExprs`` per output, from the spec's shape rules run on the
    input ``DimsExprs`` through the expression builder."""
    shapes = [tuple(Expr(trt, builder, d) for d in dims) for dims in inputs]
    out = spec.output_shapes(shapes, attrs)
    return [trt.DimsExprs([Expr.of(trt, builder, d).expr for d in dims]) for dims in out]


# --------------------------------------------------------------------------------------------
# Fields: attributes in, attributes out
# --------------------------------------------------------------------------------------------


_FIELD_DATA: dict[tuple[Any, ...], list[Any]] = {}  # the arrays behind fields: PluginField keeps a raw pointer


def field_collection(trt: Any, spec: OpSpec, values: dict[str, Any] | None = None) -> Any:
    """The creator's declared fields (``values`` None: empty data) or the fields an engine
    serialises (the attribute values), one per attribute in spec order.

    A ``PluginField`` points at its numpy array without owning it: the arrays are kept for the
    process (one set per op and attribute values)."""
    import numpy as np

    key = (spec.id, None if values is None else tuple((a.name, values[a.name]) for a in spec.attrs))
    if key not in _FIELD_DATA:
        arrays = []
        for a in spec.attrs:
            if values is None:
                arrays.append(np.zeros(0, dtype=np.int32))
            elif a.type == INT:
                arrays.append(np.array([values[a.name]], dtype=np.int32))
            elif a.type == FLOAT:
                arrays.append(np.array([values[a.name]], dtype=np.float32))
            else:  # as the ONNX parser passes a STRING: its characters and the terminating NUL
                arrays.append(np.array(list(str(values[a.name]).encode() + b"\x00"), dtype=np.int8))
        _FIELD_DATA[key] = arrays
    return trt.PluginFieldCollection([trt.PluginField(a.name, data, getattr(trt.PluginFieldType, _FIELD_TYPES[a.type]))
                                      for a, data in zip(spec.attrs, _FIELD_DATA[key], strict=True)])


def read_fields(spec: OpSpec, fields: Any) -> dict[str, Any]:
    """The op's attributes from a ``PluginFieldCollection`` (the parser's or an engine's): INT32
    and FLOAT32 fields as numbers, CHAR fields as text without the terminating NUL; checked and
    completed with the defaults by the spec (a missing required attribute: UsageError)."""
    import numpy as np

    types = {a.name: a.type for a in spec.attrs}
    values: dict[str, Any] = {}
    for f in fields:
        name = str(f.name)
        if name not in types:
            continue
        data = np.asarray(f.data)
        if types[name] == STRING:
            values[name] = data.astype(np.uint8).tobytes().split(b"\x00", 1)[0].decode()
        elif data.size != 1:
            raise UsageError(f"{spec.name}: attribute {name} has {data.size} values. Expected one {types[name]}.")
        else:
            values[name] = int(data.reshape(-1)[0]) if types[name] == INT else float(data.reshape(-1)[0])
    return spec.bind_attrs(values)


# --------------------------------------------------------------------------------------------
# The kernel launch (cuda-python)
# --------------------------------------------------------------------------------------------


def import_cuda_driver() -> Any:
    """``cuda.bindings.driver`` (cuda-python), or an error naming the [tensorrt-rtx] extra."""
    try:
        from cuda.bindings import driver
    except ImportError as e:
        raise missing_dependency("cuda-python", "tensorrt-rtx", "running the vdeblur TensorRT-RTX plugins") from e
    return driver


def ptx_param_kinds(ptx: str, name: str) -> list[str]:
    """The parameters of the PTX ``.entry name`` as launch kinds ("ptr", "i32"...), read by
    :func:`vdeblur.plugins.aot.ptx_entry_params` (the one PTX parser)."""
    from vdeblur.plugins.aot import ptx_entry_params

    return [p.kind for p in ptx_entry_params(ptx, name)]


def launch_args(kinds: Sequence[str], pointers_in: Sequence[int], scalars: Sequence[int],
                pointers_out: Sequence[int]) -> list[tuple[str, int]]:
    """(kind, value) of every kernel parameter: the inputs' pointers, the int scalars, the outputs'
    pointers (the spec's AOT order; :func:`vdeblur.plugins.aot.compile_op` removes Triton's unused
    scratch pointers, so the PTX declares exactly these). BackendError when it declares anything else."""
    args = ([("ptr", int(p)) for p in pointers_in] + [("i32", int(s)) for s in scalars]
            + [("ptr", int(p)) for p in pointers_out])
    ours = [k for k, _ in args]
    if list(kinds) != ours:
        raise BackendError(f"tensorrt-rtx plugin: the kernel declares parameters {list(kinds)}. Expected {ours} "
                           "(inputs, int scalars, outputs).")
    return args


class Launcher:
    """Loads PTX into the current CUDA context (once per context and kernel) and launches it on a
    stream through cuda-python's driver API. ``driver``: ``cuda.bindings.driver`` or a fake."""

    def __init__(self, driver: Any = None) -> None:
        self._driver = driver
        self._functions: dict[tuple[int, str, int], Any] = {}
        self._modules: list[Any] = []

    @property
    def driver(self) -> Any:
        if self._driver is None:
            self._driver = import_cuda_driver()
        return self._driver

    def _check(self, result: Any, what: str) -> Any:
        status, *rest = result if isinstance(result, tuple) else (result,)
        if int(status) != 0:
            name = str(status)
            try:
                err, text = self.driver.cuGetErrorName(status)
                if int(err) == 0 and text:
                    name = text.decode() if isinstance(text, bytes) else str(text)
            except Exception:  # noqa: BLE001 - keep the original status in the message
                pass
            raise BackendError(f"tensorrt-rtx plugin: {what} failed ({name}). Expected a working CUDA device.")
        return rest[0] if len(rest) == 1 else tuple(rest)

    def arch(self) -> int:
        """Compute capability of the current context's device, as an int (e.g. 89)."""
        d = self.driver
        device = self._check(d.cuCtxGetDevice(), "cuCtxGetDevice")
        attr = d.CUdevice_attribute
        major = self._check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
                            "cuDeviceGetAttribute")
        minor = self._check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
                            "cuDeviceGetAttribute")
        return int(major) * 10 + int(minor)

    def function(self, kernel: Any) -> Any:
        """The loaded ``CUfunction`` of a :class:`vdeblur.plugins.aot.CompiledKernel` in the current context."""
        d = self.driver
        ctx = self._check(d.cuCtxGetCurrent(), "cuCtxGetCurrent")
        key = (int(ctx), kernel.name, hash(kernel.ptx))
        if key not in self._functions:
            module = self._check(d.cuModuleLoadData(kernel.ptx.encode() + b"\x00"), f"loading the PTX of {kernel.name}")
            self._modules.append(module)
            fn = self._check(d.cuModuleGetFunction(module, kernel.name.encode()), f"cuModuleGetFunction {kernel.name}")
            if kernel.shared_mem > 48 * 1024:
                self._check(d.cuFuncSetAttribute(
                    fn, d.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, kernel.shared_mem),
                    "cuFuncSetAttribute")
            self._functions[key] = fn
        return self._functions[key]

    def launch(self, kernel: Any, grid: Sequence[int], args: Sequence[tuple[str, int]], stream: int) -> None:
        """Launch ``kernel`` on ``stream`` (a cudaStream_t as an int) with ``grid`` (x, y, z), one block
        of ``kernel.block_x`` threads, ``kernel.shared_mem`` bytes of dynamic shared memory and the
        (kind, value) parameters of :func:`launch_args`."""
        fn = self.function(kernel)
        holders = [ctypes.c_void_p(v) if k == "ptr" else ctypes.c_int32(v) for k, v in args]
        pointers = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        gx, gy, gz = (max(1, int(g)) for g in grid)
        self._check(self.driver.cuLaunchKernel(fn, gx, gy, gz, kernel.block_x, 1, 1, kernel.shared_mem,
                                               self.driver.CUstream(int(stream)), ctypes.addressof(pointers), 0),
                    f"launching {kernel.name}")


_LAUNCHER = Launcher()


def kernel_arch(device_arch: int) -> int:
    """The PTX target for a GPU of compute capability ``device_arch`` (e.g. 121 -> 120): the newest
    target of :data:`vdeblur.plugins.aot.SUPPORTED_ARCHS` not above it (PTX is JIT-compiled upwards)."""
    from vdeblur.plugins.aot import SUPPORTED_ARCHS

    fits = [a for a in SUPPORTED_ARCHS if a <= device_arch]
    if not fits:
        raise BackendError(f"tensorrt-rtx plugin: sm_{device_arch} is older than every kernel target. "
                           f"Expected a GPU of compute capability >= {min(SUPPORTED_ARCHS) / 10:.1f}.")
    return max(fits)


# --------------------------------------------------------------------------------------------
# The generated plugin and creator classes
# --------------------------------------------------------------------------------------------


def dtype_name(trt: Any, dtype: Any) -> str:
    """A tensorrt_rtx DataType -> 'float32' | 'float16'."""
    names = {getattr(trt, attr): name for name, attr in _DTYPES.items()}
    if dtype not in names:
        raise BackendError(f"tensorrt-rtx plugin: data type {dtype} is not supported. Expected FP32 or FP16.")
    return names[dtype]


def plugin_classes(spec: OpSpec, trt: Any, launcher: Launcher | None = None,
                   compile_op: Callable[..., Any] | None = None) -> tuple[type, type]:
    """(plugin class, creator class) of op ``spec`` for the tensorrt(_rtx) module ``trt``.

    launcher / compile_op: what ``enqueue`` launches with (default: the process's :class:`Launcher`
    and :func:`vdeblur.plugins.aot.compile_op`; tests pass fakes)."""
    name = spec.plugin_name
    allowed = [getattr(trt, _DTYPES[d]) for d in spec.plugin_dtypes]

    class Plugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,  # type: ignore[misc, name-defined]
                 trt.IPluginV3OneRuntime):
        __qualname__ = f"{name}RtxPlugin"
        op = spec

        def __init__(self, attrs: dict[str, Any], layer: str = "") -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = len(spec.outputs)
            self.plugin_namespace = NAMESPACE
            self.plugin_name = name
            self.plugin_version = VERSION
            self.timing_cache_id = ""
            self.metadata_string = f"{spec.id} {attrs}"
            self.attrs = dict(attrs)
            self.layer = layer
            self.dtype: str | None = None

        # ----- core / build -------------------------------------------------------------

        def get_capability_interface(self, kind: Any) -> Any:
            return self

        def clone(self) -> Plugin:
            twin = Plugin(self.attrs, self.layer)
            twin.dtype = self.dtype
            return twin

        def get_output_data_types(self, input_types: Sequence[Any]) -> list[Any]:
            return [input_types[0] if o.dtype is None else getattr(trt, _DTYPES[o.dtype]) for o in spec.outputs]

        def get_output_shapes(self, inputs: Sequence[Any], shape_inputs: Sequence[Any], builder: Any) -> list[Any]:
            return output_dims(trt, spec, self.attrs, inputs, builder)

        def supports_format_combination(self, pos: int, in_out: Sequence[Any], num_inputs: int) -> bool:
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            if pos < num_inputs:
                return desc.type in allowed and (pos == 0 or desc.type == in_out[0].desc.type)
            fixed = spec.outputs[pos - num_inputs].dtype
            return desc.type == (in_out[0].desc.type if fixed is None else getattr(trt, _DTYPES[fixed]))

        def configure_plugin(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
            self.dtype = dtype_name(trt, inputs[0].desc.type)

        def get_workspace_size(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
            return 0

        def get_valid_tactics(self) -> list[int]:
            return []

        def set_tactic(self, tactic: int) -> None:
            return None

        def get_fields_to_serialize(self) -> Any:
            return field_collection(trt, spec, self.attrs)

        # ----- runtime ------------------------------------------------------------------

        def on_shape_change(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
            self.dtype = dtype_name(trt, inputs[0].type)

        def attach_to_context(self, context: Any) -> Plugin:
            return self.clone()

        def enqueue(self, input_desc: Sequence[Any], output_desc: Sequence[Any], inputs: Sequence[int],
                    outputs: Sequence[int], workspace: int, stream: int) -> None:
            run = launcher or _LAUNCHER
            compile_fn = compile_op
            if compile_fn is None:
                from vdeblur.plugins.aot import compile_op as compile_fn
            dtype = dtype_name(trt, input_desc[0].type)
            shapes = [tuple(int(d) for d in desc.dims) for desc in input_desc]
            kernel = compile_fn(spec, dtype, self.attrs, kernel_arch(run.arch()))
            grid, scalars = spec.plan(shapes, self.attrs, int_cdiv)
            args = launch_args(ptx_param_kinds(kernel.ptx, kernel.name), inputs, scalars, outputs)
            run.launch(kernel, grid, args, stream)

    class Creator(trt.IPluginCreatorV3One):  # type: ignore[misc, name-defined]
        __qualname__ = f"{name}RtxCreator"
        op = spec

        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = name
            self.plugin_namespace = NAMESPACE
            self.plugin_version = VERSION
            self.field_names = field_collection(trt, spec)

        def create_plugin(self, layer: str, fields: Any, phase: Any) -> Plugin:
            return Plugin(read_fields(spec, fields), str(layer))

    Plugin.__name__, Creator.__name__ = Plugin.__qualname__, Creator.__qualname__
    return Plugin, Creator


def register(spec: OpSpec, trt: Any | None = None) -> Any:
    """Register op ``spec``'s creator with TensorRT-RTX's plugin registry (needs the [tensorrt-rtx]
    extra); again: a no-op. Returns the creator."""
    trt = trt if trt is not None else import_tensorrt_rtx("registering the vdeblur TensorRT-RTX plugins")
    with _LOCK:
        if spec.id in _REGISTERED:
            return _REGISTERED[spec.id]
        registry = trt.get_plugin_registry()
        _, creator_class = plugin_classes(spec, trt)
        creator = creator_class()
        if not registry.register_creator(creator, NAMESPACE):
            raise BackendError(f"tensorrt-rtx: registering the plugin creator {spec.id} failed (another creator "
                               f"{NAMESPACE}::{spec.plugin_name} version {VERSION} is registered in this process?). "
                               "Expected vdeblur's plugins registered only by register_tensorrt_rtx_plugins().")
        _REGISTERED[spec.id] = creator
        return creator
