"""The AOT path of the TensorRT plugins, without TensorRT: Triton -> PTX per GPU target, launch plans."""

from __future__ import annotations

import importlib
import re

import pytest

from vdeblur.errors import ExportError, MissingDependencyError
from vdeblur.plugins.correlation import trt as corr_trt
from vdeblur.plugins.correlation_argmax import trt as argmax_trt
from vdeblur.plugins.flow_warp import trt as warp_trt

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False


def ptx_params(ptx: str, name: str) -> list[str]:
    m = re.search(rf"\.entry {name}\((.*?)\)", ptx, re.S)
    assert m, f"no .entry {name} in the PTX"
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


CASES = [
    ("correlation", lambda arch, dt: corr_trt.aot_kernel(dt, 10, 1, arch)),
    ("correlation_argmax", lambda arch, dt: argmax_trt.aot_kernel(dt, 10, 5, arch)),
    ("flow_warp", lambda arch, dt: warp_trt.aot_kernel(dt, "zeros", arch)),
]


@pytest.mark.parametrize("op,compile_fn", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("arch", [80, 89, 90])
def test_kernel_compiles_to_ptx_for_target(op: str, compile_fn, arch: int) -> None:  # type: ignore[no-untyped-def]
    ck = compile_fn(arch, "float32")
    assert f".target sm_{arch}" in ck.ptx
    params = ptx_params(ck.ptx, ck.name)
    # TensorRT's order: 2 input pointers, 3 int scalars (C, H, W), 1 output pointer; Triton may append
    # hidden scratch pointers, which compile_kernel has checked are unused.
    assert ".u64" in params[0] and ".u64" in params[1]
    assert all(".u32" in p for p in params[2:5])
    assert ".u64" in params[5]
    assert ck.block_x == ck.num_warps * 32
    if ck.registers is not None:  # ptxas is bundled with Triton; record what it reports
        assert 0 < ck.registers <= 255
        assert ck.spill_stores == 0 and ck.spill_loads == 0, f"{op} spills on sm_{arch}"


def test_half_precision_variant_and_attribute_baking() -> None:
    a = corr_trt.aot_kernel("float16", 4, 2, 90)
    b = corr_trt.aot_kernel("float16", 10, 1, 90)
    assert ".f16" in a.ptx or ".b16" in a.ptx
    assert a.ptx != b.ptx  # the attributes are constexprs baked into the code
    border = warp_trt.aot_kernel("float32", "border", 90)
    zeros = warp_trt.aot_kernel("float32", "zeros", 90)
    assert border.ptx != zeros.ptx


def test_unsupported_target_and_dtype_fail_clearly() -> None:
    with pytest.raises(ExportError, match="sm_61 is not a supported target"):
        corr_trt.aot_kernel("float32", 4, 1, 61)
    with pytest.raises(ExportError, match="dtype 'int8' is not supported"):
        corr_trt.aot_kernel("int8", 4, 1, 90)


class Sym:
    """A stand-in for TensorRT shape expressions: records arithmetic instead of computing it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _op(self, other: object, sign: str) -> Sym:
        return Sym(f"({self.text} {sign} {other.text if isinstance(other, Sym) else other})")

    def __add__(self, o: object) -> Sym:
        return self._op(o, "+")

    def __mul__(self, o: object) -> Sym:
        return self._op(o, "*")

    def __floordiv__(self, o: object) -> Sym:
        return self._op(o, "//")


def sym_cdiv(a: Sym, b: int) -> Sym:
    return Sym(f"cdiv({a.text}, {b})")


def test_launch_plans_cover_the_image_and_accept_shape_expressions() -> None:
    n, c, h, w = 2, 52, 180, 320
    grid, scalars = corr_trt.launch(n, c, h, w, 10, 1)
    from vdeblur.plugins.correlation import kernel as ck

    assert grid[0] * ck.BLOCK >= h * w and grid[1] == 21 and grid[2] == n and scalars == (c, h, w)
    grid, scalars = argmax_trt.launch(n, c, h, w)
    from vdeblur.plugins.correlation_argmax import kernel as ak

    assert grid[0] * ak.TILE >= w and grid[1] * ak.TILE >= h and grid[2] == n
    grid, _ = warp_trt.launch(n, c, h, w)
    from vdeblur.plugins.flow_warp import kernel as wk

    assert grid[0] * wk.BLOCK >= h * w and grid[1] == n
    sgrid, sscalars = corr_trt.launch(Sym("N"), Sym("C"), Sym("H"), Sym("W"), 10, 1, sym_cdiv)
    assert sgrid[0].text == f"cdiv((H * W), {ck.BLOCK})" and sgrid[1] == 21 and sgrid[2].text == "N"
    assert [s.text for s in sscalars] == ["C", "H", "W"]
    sgrid, _ = argmax_trt.launch(Sym("N"), Sym("C"), Sym("H"), Sym("W"), sym_cdiv)
    assert sgrid[0].text == f"cdiv(W, {ak.TILE})" and sgrid[1].text == f"cdiv(H, {ak.TILE})"


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed: the missing-dependency path cannot be shown")
@pytest.mark.parametrize("module", ["correlation", "correlation_argmax", "flow_warp"])
def test_register_without_tensorrt_names_the_extra(module: str) -> None:
    trt_module = importlib.import_module(f"vdeblur.plugins.{module}.trt")  # importable without tensorrt
    with pytest.raises(MissingDependencyError, match=r"pip install 'vdeblur\[tensorrt\]'"):
        trt_module.register()


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TENSORRT, reason="needs the tensorrt package (extra [tensorrt]; NVIDIA's index)")
def test_register_all_plugins_with_tensorrt() -> None:
    import tensorrt as trt

    from vdeblur.plugins.lowering import register_tensorrt_plugins

    register_tensorrt_plugins()
    registry = trt.get_plugin_registry()
    for name in ("Correlation", "CorrelationArgmax", "FlowWarp"):
        assert registry.get_creator(name, "1", "vdeblur") is not None


def test_plugin_registration_path_does_not_import_torch() -> None:
    # AOT engines need no Python at inference; registering the plugins in a TensorRT process must not
    # drag torch in either.
    import subprocess
    import sys

    code = (
        "import sys, vdeblur.plugins, vdeblur.plugins.lowering, vdeblur.plugins.correlation.trt, "
        "vdeblur.plugins.correlation_argmax.trt, vdeblur.plugins.flow_warp.trt; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
