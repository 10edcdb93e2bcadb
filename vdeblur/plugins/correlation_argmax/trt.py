"""TensorRT quickly deployable plugin (AOT) of ``vdeblur::CorrelationArgmax``.

Same structure as correlation/trt.py; the output (flow) is FP32 whatever the input type.
"""

# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations as objects.
from collections.abc import Callable
from typing import Any

from vdeblur.plugins._trt import aot_result, current_arch, dtype_name, import_trtp, int_cdiv
from vdeblur.plugins.aot import CompiledKernel, compile_kernel, triton_dtype
from vdeblur.plugins.correlation_argmax import OP_ID, kernel


def aot_kernel(dtype: str, max_displacement: int, pool: int, arch: int) -> CompiledKernel:
    """PTX of the fused kernel for ``sm_<arch>`` with the attributes baked in."""
    t = triton_dtype(dtype)
    signature = {"f1_ptr": f"*{t}", "f2_ptr": f"*{t}", "C": "i32", "H": "i32", "W": "i32", "flow_ptr": "*fp32"}
    constexprs = {"MAX_DISP": max_displacement, "POOL": pool, "TILE": kernel.TILE, "HALO": kernel.halo(pool)}
    return compile_kernel(kernel.correlation_argmax_kernel, signature, constexprs, arch)


def launch(n: Any, c: Any, h: Any, w: Any,
           cdiv: Callable[[Any, int], Any] = int_cdiv) -> tuple[tuple[Any, Any, Any], tuple[Any, ...]]:
    """(grid, int scalars) for an input (N, C, H, W); ints or TensorRT shape expressions."""
    return kernel.launch_grid(n, h, w, cdiv), (c, h, w)


def register() -> None:
    """Register the plugin with TensorRT (needs the [tensorrt] extra)."""
    trt, trtp = import_trtp()
    from typing import List, Tuple, Union  # noqa: UP035 - tensorrt.plugin matches these forms

    @trtp.register(OP_ID)
    def _desc(f1: trtp.TensorDesc, f2: trtp.TensorDesc, max_displacement: int, pool: int) -> trtp.TensorDesc:
        s = f1.shape_expr
        return trtp.from_shape_expr((s[0], 2, s[2], s[3]), dtype=trt.float32)

    @trtp.autotune(OP_ID)
    def _tune(f1: trtp.TensorDesc, f2: trtp.TensorDesc, max_displacement: int, pool: int,
              outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32", "LINEAR")]

    @trtp.aot_impl(OP_ID)
    def _aot(f1: trtp.TensorDesc, f2: trtp.TensorDesc, max_displacement: int, pool: int,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        ck = aot_kernel(dtype_name(trt, f1.dtype), max_displacement, pool, current_arch())
        s = f1.shape_expr
        return aot_result(trtp, ck, *launch(s[0], s[1], s[2], s[3], trtp.cdiv))  # type: ignore[return-value]
