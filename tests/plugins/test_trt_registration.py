"""The QDP registrations (vdeblur/plugins/qdp.py) against the documented `tensorrt.plugin`
surface, without TensorRT.

A small stand-in for `tensorrt` / `tensorrt.plugin` records what the generated plugins declare
(reference/TENSORRT.md: register, autotune, aot_impl with `outputs, tactic` last, parameter names
matching register, launch parameters and int scalars) and, like the real one, refuses a second
registration of an id. The real registration runs in
test_ops.py::test_register_all_plugins_with_tensorrt on machines with TensorRT.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

import pytest

from vdeblur.errors import UsageError
from vdeblur.plugins import specs

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False

pytestmark = pytest.mark.skipif(HAS_TENSORRT, reason="the real tensorrt is installed; see test_aot.py")


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

    def decorator(kind: str) -> Any:
        def outer(plugin_id: str) -> Any:
            def inner(fn: Any) -> Any:
                if kind == "register" and plugin_id in registry:  # tensorrt/plugin/_lib.py does the same
                    raise ValueError(f"already has a definition for {plugin_id!r}")
                registry.setdefault(plugin_id, {})[kind] = fn
                return fn
            return inner
        return outer

    trtp = types.ModuleType("tensorrt.plugin")
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
