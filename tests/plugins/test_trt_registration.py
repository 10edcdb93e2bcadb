"""The QDP registrations (vdeblur/plugins/qdp.py) without TensorRT's libraries, two ways.

1. A small stand-in for `tensorrt` / `tensorrt.plugin` records what the generated plugins declare
   (reference/TENSORRT.md: register, autotune, aot_impl with `outputs, tactic` last, parameter names
   matching register, launch parameters and int scalars) and, like the real one, refuses a second
   registration of an id.
2. TensorRT 11.4's own `tensorrt.plugin` (pure Python, shipped by the tensorrt-cu13-bindings wheel
   as `tensorrt_bindings/plugin/`) runs over a stand-in of the compiled `tensorrt` core module: its
   decorators validate our functions, its creator builds the AOT plugin from plugin fields as the
   ONNX parser passes them, and its plugin class calls our functions the way TensorRT's builder
   drives a QDP (output types, output shapes with an expression builder, format combinations,
   launch parameters, kernel). See ``TestWithTensorRTsOwnPluginCode`` for what that covers and what
   it cannot. The real registration with libnvinfer runs in
   test_ops.py::test_register_all_plugins_with_tensorrt on machines with TensorRT.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vdeblur.errors import UsageError
from vdeblur.plugins import qdp, specs
from vdeblur.plugins.spec import FLOAT, INT, STRING, OpSpec, int_cdiv

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False

no_real_tensorrt = pytest.mark.skipif(HAS_TENSORRT, reason="the real tensorrt is installed; see test_ops.py")
OPS = list(specs().values())
IDS = [s.name for s in OPS]


class Expr:
    def __init__(self, text: str) -> None:
        self.text = text

    def __mul__(self, other: object) -> Expr:
        return Expr(f"({self.text} * {getattr(other, 'text', other)})")


class TensorDesc:
    def __init__(self, shape: list[str], dtype: str) -> None:
        self.shape_expr = [Expr(d) for d in shape]
        self.dtype = dtype

    def like(self) -> tuple[str, ...]:
        return ("like", *(e.text for e in self.shape_expr), self.dtype)


def fake_tensorrt() -> tuple[types.ModuleType, types.ModuleType, dict[str, dict[str, Any]]]:
    registry: dict[str, dict[str, Any]] = {}

    op = types.SimpleNamespace()  # trtp.op.<namespace>.<name>: the definitions, as in the real one

    def decorator(kind: str) -> Any:
        def outer(plugin_id: str) -> Any:
            def inner(fn: Any) -> Any:
                namespace, name = plugin_id.split("::")
                if kind == "register" and plugin_id in registry:  # tensorrt/plugin/_lib.py does the same
                    raise ValueError(f"already has a definition for {plugin_id!r}")
                if kind == "register":
                    setattr(op.__dict__.setdefault(namespace, types.SimpleNamespace()), name, fn)
                registry.setdefault(plugin_id, {})[kind] = fn
                return fn
            return inner
        return outer

    trtp = types.ModuleType("tensorrt.plugin")
    trtp.op = op  # type: ignore[attr-defined]
    trtp.TensorDesc = TensorDesc  # type: ignore[attr-defined]
    trtp.register = decorator("register")  # type: ignore[attr-defined]
    trtp.autotune = decorator("autotune")  # type: ignore[attr-defined]
    trtp.aot_impl = decorator("aot_impl")  # type: ignore[attr-defined]
    trtp.AutoTuneCombination = lambda *a: ("combination", *a)  # type: ignore[attr-defined]
    trtp.from_shape_expr = lambda shape, dtype: ("shape", *(getattr(d, "text", d) for d in shape), dtype)  # type: ignore[attr-defined]
    trtp.KernelLaunchParams = types.SimpleNamespace  # type: ignore[attr-defined]
    trtp.SymInt32 = lambda e: ("i32", getattr(e, "text", e))  # type: ignore[attr-defined]
    trtp.SymIntExprs = types.SimpleNamespace(from_tuple=lambda xs: list(xs))  # type: ignore[attr-defined]
    trtp.SymExprs = list  # type: ignore[attr-defined]
    trtp.cdiv = lambda a, b: Expr(f"cdiv({a.text}, {b})")  # type: ignore[attr-defined]
    trt = types.ModuleType("tensorrt")
    trt.float32, trt.float16 = "FP32", "FP16"  # type: ignore[attr-defined]
    trt.plugin = trtp  # type: ignore[attr-defined]
    return trt, trtp, registry


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    trt, trtp, registry = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setenv("VDEBLUR_AOT_ARCH", "90")
    monkeypatch.setattr("vdeblur.plugins.qdp._REGISTERED", set())  # a fresh process, as far as TensorRT goes
    from vdeblur.plugins.lowering import register_tensorrt_plugins

    register_tensorrt_plugins()
    register_tensorrt_plugins()  # idempotent: the stand-in would raise on a second registration
    return registry


@no_real_tensorrt
def test_every_plugin_registers_its_three_parts(registered: dict[str, dict[str, Any]]) -> None:
    assert set(registered) == {s.id for s in specs().values()}
    assert {"vdeblur::Correlation", "vdeblur::CorrelationArgmax", "vdeblur::FlowWarp"} <= set(registered)
    for plugin_id, parts in registered.items():
        assert set(parts) == {"register", "autotune", "aot_impl"}, plugin_id
        reg = list(inspect.signature(parts["register"]).parameters)
        aot = list(inspect.signature(parts["aot_impl"]).parameters)
        tune = list(inspect.signature(parts["autotune"]).parameters)
        assert aot == [*reg, "outputs", "tactic"]  # TensorRT 11.1's validator: names match, outputs+tactic last
        assert tune == [*reg, "outputs"]
        hints = inspect.get_annotations(parts["register"])
        assert all(not isinstance(h, str) for h in hints.values())  # real objects, not postponed strings


@no_real_tensorrt
def test_shapes_and_aot_kernels(registered: dict[str, dict[str, Any]]) -> None:
    # The AOT kernels are those test_ops.py compiles (fp16, sm_90): compile_op's cache serves them.
    f = TensorDesc(["N", "C", "H", "W"], "FP32")
    half = TensorDesc(["N", "C", "H", "W"], "FP16")
    corr = registered["vdeblur::Correlation"]
    assert corr["register"](f, f, 4, 2) == ("shape", "N", 25, "H", "W", "FP32")
    assert corr["register"](half, half, 4, 3) == ("shape", "N", 9, "H", "W", "FP16")
    name, ptx, params, extra = corr["aot_impl"](half, half, 4, 3, (None,), 0)
    assert name == b"correlation_kernel" and b".target sm_90" in ptx
    assert params.grid_y == 3 and params.grid_z.text == "N" and params.grid_x.text == "cdiv((H * W), 64)"
    assert params.block_x == 128
    assert extra == [("i32", "C"), ("i32", "H"), ("i32", "W")]

    search = registered["vdeblur::CorrelationArgmax"]
    assert search["register"](f, f, 10, 5) == ("shape", "N", 2, "H", "W", "FP32")
    assert search["register"](half, half, 10, 5)[-1] == "FP32"  # the flow is float32 for any input
    name, ptx, params, _ = search["aot_impl"](half, half, 3, 5, (None,), 0)
    assert name == b"correlation_argmax_kernel" and params.grid_x.text == "cdiv(W, 16)"
    assert search["autotune"](f, f, 10, 5, (None,)) == [("combination", "FP32|FP16, FP32|FP16, FP32", "LINEAR")]

    warp = registered["vdeblur::FlowWarp"]
    # STRING attributes reach the plugin with the parser's trailing NUL (reference/TENSORRT.md).
    assert warp["register"](f, f, "border\x00") == ("shape", "N", "C", "H", "W", "FP32")
    assert warp["autotune"](f, f, "zeros\x00", (None,)) == [("combination", "FP32|FP16, FP32|FP16, FP32|FP16",
                                                              "LINEAR")]
    name, ptx, params, _ = warp["aot_impl"](half, half, "border\x00", (None,), 0)
    assert name == b"flow_warp_kernel" and params.grid_y.text == "N" and params.grid_z == 1
    with pytest.raises(UsageError, match="padding_mode='reflect' is unknown"):
        warp["aot_impl"](f, f, "reflect\x00", (None,), 0)


@no_real_tensorrt
def test_a_plugin_tensorrt_already_knows_is_not_registered_again(registered: dict[str, dict[str, Any]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A second copy of qdp's once-set (a reloaded module, another import path): tensorrt.plugin's own
    # record (trtp.op.<namespace>.<name>) keeps register from being called again, which would raise.
    monkeypatch.setattr("vdeblur.plugins.qdp._REGISTERED", set())
    for spec in OPS:
        qdp.register(spec)
    assert qdp._REGISTERED == {s.id for s in OPS}


# ----- TensorRT 11.4's own tensorrt.plugin over a stand-in of the compiled core module -------------


def trt_plugin_sources() -> Path | None:
    """tensorrt/plugin/ as the tensorrt-cu13-bindings wheel ships it (tensorrt_bindings/plugin), found
    without importing it (its package __init__ loads libnvinfer)."""
    found = importlib.util.find_spec("tensorrt_bindings")
    if found is None or not found.submodule_search_locations:
        return None
    plugin = Path(list(found.submodule_search_locations)[0]) / "plugin"
    return plugin if (plugin / "_lib.py").is_file() else None


PLUGIN_SOURCES = trt_plugin_sources()
needs_plugin_sources = pytest.mark.skipif(
    PLUGIN_SOURCES is None, reason="needs TensorRT's tensorrt.plugin sources: pip install tensorrt-cu13-bindings")


def _enum(name: str, members: str) -> type[enum.Enum]:
    return enum.Enum(name, members)  # type: ignore[return-value]


class Sym:
    """A shape expression of the stand-in expression builder: it evaluates on concrete sizes."""

    def __init__(self, fn: Callable[[dict[str, int]], int], text: str, constant: int | None = None) -> None:
        self.fn, self.text, self.constant = fn, text, constant

    def is_constant(self) -> bool:
        return self.constant is not None

    def get_constant_value(self) -> int:
        assert self.constant is not None, self.text
        return self.constant

    def __repr__(self) -> str:
        return self.text


def stub_core() -> types.ModuleType:
    """The names tensorrt.plugin uses from the compiled `tensorrt` module, as plain Python."""
    trt = types.ModuleType("tensorrt")

    class Base:
        def __init__(self) -> None:
            pass

    for base in ("IPluginV3", "IPluginV3QuickCore", "IPluginV3QuickBuild", "IPluginV3QuickRuntime",
                 "IPluginV3QuickAOTBuild", "IPluginCreatorV3Quick", "ISymExpr", "IExprBuilder", "ITensor"):
        setattr(trt, base, type(base, (Base,), {}))
    trt.IDimensionExpr = type("IDimensionExpr", (Sym,), {})
    trt.DataType = _enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 FP8 BF16 INT64 INT4 FP4 E8M0")
    trt.float32, trt.float16, trt.int32 = trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.INT32
    trt.TensorFormat = _enum("TensorFormat", "LINEAR CHW2 HWC8 CHW4 CHW16 CHW32 DHWC8 CDHW32 HWC DLA_LINEAR")
    trt.DimensionOperation = _enum("DimensionOperation", "SUM PROD MAX MIN SUB EQUAL LESS FLOOR_DIV CEIL_DIV")
    trt.PluginFieldType = _enum("PluginFieldType",
                                "FLOAT16 FLOAT32 FLOAT64 INT8 INT16 INT32 CHAR DIMS UNKNOWN BF16 INT64 FP8 INT4 FP4")
    trt.QuickPluginCreationRequest = _enum("QuickPluginCreationRequest",
                                           "UNKNOWN PREFER_JIT PREFER_AOT STRICT_JIT STRICT_AOT")
    trt.TensorRTPhase = _enum("TensorRTPhase", "BUILD RUNTIME")
    trt.PluginArgType = _enum("PluginArgType", "INT")
    trt.PluginArgDataType = _enum("PluginArgDataType", "INT8 INT16 INT32")

    class Logger:
        WARNING = 2

        def log(self, severity: int, message: str) -> None:
            pass

    class PluginField:
        def __init__(self, name: str, data: Any = None, type: Any = None) -> None:  # noqa: A002
            self.name, self.type = name, type
            self.data = np.frombuffer(data, dtype=np.int8) if isinstance(data, bytes) else np.asarray(data)

    class PluginFieldCollection(list):
        pass

    class Registry:
        def __init__(self) -> None:
            self.creators: dict[tuple[str, str, str], Any] = {}

        def register_creator(self, creator: Any, namespace: str) -> bool:
            key = (creator.name, creator.plugin_version, namespace)
            if key in self.creators:
                return False
            self.creators[key] = creator
            return True

        def get_creator(self, name: str, version: str, namespace: str) -> Any:
            return self.creators.get((name, version, namespace))

    class Dims(list):
        MAX_DIMS = 8

        def __init__(self, shape: Any = ()) -> None:
            super().__init__([0] * shape if isinstance(shape, int) else shape)

    class DimsExprs(list):
        def __init__(self, n: int) -> None:
            super().__init__([None] * n)

    class PluginTensorDesc:
        def __init__(self, dims: Any = (), type: Any = None, format: Any = None) -> None:  # noqa: A002
            self.dims, self.type, self.format, self.scale = Dims(dims), type, format, 1.0

    class DynamicPluginTensorDesc:
        def __init__(self, dims: Any, type: Any) -> None:  # noqa: A002
            self.desc = PluginTensorDesc(dims, type, trt.TensorFormat.LINEAR)
            self.min = self.opt = self.max = Dims(dims)

    registry = Registry()
    trt.Logger, trt.PluginField, trt.PluginFieldCollection = Logger, PluginField, PluginFieldCollection
    trt.Dims, trt.DimsExprs, trt.PluginTensorDesc = Dims, DimsExprs, PluginTensorDesc
    trt.DynamicPluginTensorDesc = DynamicPluginTensorDesc
    trt.get_plugin_registry = lambda: registry
    trt.nptype = lambda dtype: {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dtype]
    return trt


class ExprBuilder:
    """IExprBuilder: constants and operations on Sym, evaluated on demand."""

    def __init__(self, core: types.ModuleType) -> None:
        self.core = core

    def constant(self, value: int) -> Sym:
        return self.core.IDimensionExpr(lambda sizes: value, str(value), value)

    def operation(self, op: Any, a: Sym, b: Sym) -> Sym:
        fns = {"SUM": lambda x, y: x + y, "SUB": lambda x, y: x - y, "PROD": lambda x, y: x * y,
               "FLOOR_DIV": lambda x, y: x // y, "CEIL_DIV": int_cdiv, "MAX": max, "MIN": min,
               "EQUAL": lambda x, y: int(x == y), "LESS": lambda x, y: int(x < y)}
        fn = fns[op.name]
        const = fn(a.constant, b.constant) if a.is_constant() and b.is_constant() else None
        return self.core.IDimensionExpr(lambda sizes: fn(a.fn(sizes), b.fn(sizes)),
                                        f"{op.name}({a.text}, {b.text})", const)


def load_trt_plugin(core: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A fresh `tensorrt.plugin` executed from TensorRT's own sources over ``core``."""
    assert PLUGIN_SOURCES is not None
    for name in [m for m in sys.modules if m == "tensorrt" or m.startswith("tensorrt.")]:
        monkeypatch.delitem(sys.modules, name)
    for source in PLUGIN_SOURCES.glob("*.py"):  # the submodules it will import: removed after the test
        monkeypatch.setitem(sys.modules, f"tensorrt.plugin.{source.stem}", None)
        del sys.modules[f"tensorrt.plugin.{source.stem}"]
    monkeypatch.setitem(sys.modules, "tensorrt", core)
    spec = importlib.util.spec_from_file_location("tensorrt.plugin", PLUGIN_SOURCES / "__init__.py",
                                                  submodule_search_locations=[str(PLUGIN_SOURCES)])
    assert spec is not None and spec.loader is not None
    trtp = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    core.plugin = trtp
    spec.loader.exec_module(trtp)  # imports _lib, _plugin_class, _tensor, _validate... (its __init__)
    return trtp


def parser_fields(core: types.ModuleType, spec: OpSpec, attrs: dict[str, Any]) -> list[Any]:
    """The plugin fields TensorRT's ONNX parser passes for a node with these attributes: every declared
    field in the creator's order; INT as INT32, FLOAT as FLOAT32, STRING as CHAR with its NUL."""
    f = core.PluginField
    kinds = {INT: lambda v: f("", np.array([v], np.int32), core.PluginFieldType.INT32),
             FLOAT: lambda v: f("", np.array([v], np.float32), core.PluginFieldType.FLOAT32),
             STRING: lambda v: f("", v.encode() + b"\x00", core.PluginFieldType.CHAR)}
    fields = []
    for a in spec.attrs:
        field = kinds[a.type](attrs[a.name])
        field.name = a.name
        fields.append(field)
    return core.PluginFieldCollection(fields)


def ptx_entry_kinds(ptx: str, name: str) -> list[str]:
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\(([^)]*)\)", ptx)
    assert m, f"no .entry {name} in the PTX"
    decls = [d.split() for d in m.group(1).split(",") if d.strip()]
    return ["ptr" if ".u64" in d and ".ptr" in d else "i32" if ".u32" in d or ".s32" in d else " ".join(d)
            for d in decls]


@pytest.fixture
def real_trtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    core = stub_core()
    trtp = load_trt_plugin(core, monkeypatch)
    monkeypatch.setenv("VDEBLUR_AOT_ARCH", "90")
    monkeypatch.setattr("vdeblur.plugins.qdp._REGISTERED", set())  # a fresh process, as far as TensorRT goes
    yield core, trtp


@needs_plugin_sources
class TestWithTensorRTsOwnPluginCode:
    """Our registration through TensorRT 11.4's `tensorrt.plugin` Python code (11.4.0.106 sources).

    Covered, by TensorRT's own code: the plugin id and namespace rules; the register / autotune /
    aot_impl signature validators (tensor names, attribute types, `outputs, tactic` last, the return
    annotations); the duplicate-id ValueError (and that we never trigger it); the creator's field
    decoding (INT32 fields to int, CHAR fields with the parser's NUL to str); the AOT plugin object
    TensorRT creates for STRICT_AOT; get_output_data_types, get_output_shapes (through a stand-in
    expression builder), get_supported_format_combinations / configure_plugin / get_valid_tactics,
    get_launch_params (its type checks on our KernelLaunchParams and SymInt32 extra args, the count
    it hands to TensorRT) and get_kernel. From what get_launch_params and get_kernel hand over, the
    test derives the kernel arguments TensorRT passes (num_inputs pointers, the extra int32s, the
    outputs' pointers) and compares them with the PTX's `.entry` parameters.

    Not covered (needs libnvinfer and a GPU): the C++ side that receives these values (that it
    launches with exactly inputs + extra args + outputs, as tensorrt.plugin documents), the real
    IExprBuilder's arithmetic, the ONNX parser's field passing (checked on TensorRT-RTX's parser
    only), the driver's JIT of the PTX, the kernel running inside an engine, and the serialised
    engine loading in another process.
    """

    def test_registration_is_accepted_and_never_repeated(self, real_trtp: tuple[Any, Any]) -> None:
        core, trtp = real_trtp
        for _ in range(2):
            for spec in OPS:
                qdp.register(spec)
        qdp._REGISTERED.clear()  # a second copy of the once-set: trtp.op's record must stop it
        for spec in OPS:
            qdp.register(spec)
        registry = core.get_plugin_registry()
        for spec in OPS:
            definition = getattr(trtp.op.vdeblur, spec.plugin_name)
            assert definition.aot_impl_func is not None and definition.autotune_func is not None
            assert definition.input_tensor_names == [i.name for i in spec.inputs]
            assert list(definition.input_attrs) == [a.name for a in spec.attrs]
            assert definition.num_outputs == len(spec.outputs)
            assert registry.get_creator(spec.plugin_name, "1", "vdeblur") is not None
            with pytest.raises(ValueError, match="already has a defin"):  # TensorRT's own check
                trtp.register(spec.id)(definition.register_func)

    def test_a_registration_interrupted_after_register_is_completed(self, real_trtp: tuple[Any, Any]) -> None:
        _, trtp = real_trtp
        spec = specs()["flow_warp"]
        describe, _, _ = qdp.plugin_functions(spec, *real_trtp)
        trtp.register(spec.id)(describe)  # as if the process had stopped before autotune / aot_impl
        qdp.register(spec)
        assert trtp.op.vdeblur.FlowWarp.aot_impl_func is not None

    @pytest.mark.parametrize("dtype", ["float16", "float32"])
    @pytest.mark.parametrize("spec", OPS, ids=IDS)
    def test_tensorrt_s_build_calls_and_the_kernel_arguments(self, real_trtp: tuple[Any, Any], spec: OpSpec,
                                                            dtype: str) -> None:
        core, trtp = real_trtp
        for s in OPS:
            qdp.register(s)
        example = spec.examples[-1]  # the attributes test_ops.py and test_aot.py compile
        attrs = spec.bind_attrs(example.attrs)
        creator = core.get_plugin_registry().get_creator(spec.plugin_name, "1", "vdeblur")
        plugin = creator.create_plugin(spec.plugin_name, "vdeblur", parser_fields(core, spec, attrs),
                                       core.TensorRTPhase.BUILD, core.QuickPluginCreationRequest.STRICT_AOT)
        assert isinstance(plugin, trtp._plugin_class._TemplateAOTPlugin)
        assert plugin.attrs == attrs | {a.name: attrs[a.name] + "\x00" for a in spec.attrs if a.type == STRING}

        trt_type = {"float32": core.DataType.FLOAT, "float16": core.DataType.HALF}
        in_types = [trt_type[dtype]] * len(spec.inputs)
        out_types = [trt_type[spec.output_dtype(i, dtype)] for i in range(len(spec.outputs))]
        assert plugin.get_output_data_types(in_types, [len(i.layout) for i in spec.inputs]) == out_types

        builder = ExprBuilder(core)
        names = [[f"{d}{k}" for d in i.layout] for k, i in enumerate(spec.inputs)]
        sizes = {n: v for ns, shape in zip(names, example.shapes, strict=True) for n, v in zip(ns, shape, strict=True)}
        dims = [[core.IDimensionExpr(lambda s, n=n: s[n], n) for n in ns] for ns in names]
        out_exprs = plugin.get_output_shapes(dims, [], builder)
        out_shapes = [tuple(e.fn(sizes) for e in exprs) for exprs in out_exprs]
        assert out_shapes == spec.output_shapes(example.shapes, attrs)

        io = [core.DynamicPluginTensorDesc(shape, t)
              for shape, t in zip([*example.shapes, *out_shapes], in_types + out_types, strict=True)]
        combos = plugin.get_supported_format_combinations(io, len(spec.inputs))
        n_io = len(io)
        offered = {tuple(d.type for d in combos[i:i + n_io]) for i in range(0, len(combos), n_io)}
        assert tuple(in_types + out_types) in offered
        plugin.configure_plugin(io[:len(spec.inputs)], io[len(spec.inputs):])
        assert plugin.get_valid_tactics() == []  # the default tactic only
        plugin.set_tactic(0)

        launch = types.SimpleNamespace()
        extra: dict[int, Any] = {}
        setter = type("SymExprSetter", (), {"__setitem__": lambda self, i, e: extra.__setitem__(i, e)})()
        plugin.get_launch_params(dims, io, len(spec.inputs), launch, setter, builder)
        grid, scalars = spec.plan(example.shapes, attrs)
        assert (launch.grid_x.expr.fn(sizes), launch.grid_y.expr.fn(sizes), launch.grid_z.expr.fn(sizes)) == grid
        assert (launch.block_x.expr.fn(sizes), launch.block_y.expr.fn(sizes)) == (spec.launch.num_warps * 32, 1)
        assert setter.nbSymExprs == len(extra) == len(spec.launch.scalars)
        assert tuple(extra[i].expr.fn(sizes) for i in range(len(extra))) == scalars
        assert all(extra[i].dtype == core.PluginArgDataType.INT32 for i in extra)

        name, ptx = plugin.get_kernel([d.desc for d in io[:len(spec.inputs)]], [d.desc for d in io[len(spec.inputs):]])
        ptx_text = ptx.decode()
        assert ".target sm_90" in ptx_text
        passes = (["ptr"] * len(spec.inputs)
                  + ["i32" if extra[i].dtype == core.PluginArgDataType.INT32 else str(extra[i].dtype)
                     for i in range(setter.nbSymExprs)]
                  + ["ptr"] * plugin.num_outputs)
        assert ptx_entry_kinds(ptx_text, name.decode() if isinstance(name, bytes) else name) == passes
