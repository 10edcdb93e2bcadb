"""TensorRT quickly deployable plugin (AOT) of ``vdeblur::Correlation``.

``register()`` defines the plugin (shape function, autotune, AOT implementation) with
``tensorrt.plugin``; everything it computes is in tensorrt-free functions (``aot_kernel``,
``launch``) that are tested without TensorRT. The op attributes are baked into the PTX as
constexprs, because AOT engines do not serialise plugin attributes.
"""

# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations as objects.
from collections.abc import Callable
from typing import Any

from vdeblur.plugins._trt import aot_result, current_arch, dtype_name, import_trtp, int_cdiv
from vdeblur.plugins.aot import CompiledKernel, compile_kernel, triton_dtype
from vdeblur.plugins.correlation import OP_ID, kernel


def aot_kernel(dtype: str, max_displacement: int, stride: int, arch: int) -> CompiledKernel:
    """PTX of the correlation kernel for ``sm_<arch>`` with the attributes baked in."""
    t = triton_dtype(dtype)
    signature = {"f1_ptr": f"*{t}", "f2_ptr": f"*{t}", "C": "i32", "H": "i32", "W": "i32", "out_ptr": f"*{t}"}
    constexprs = {"MAX_DISP": max_displacement, "STRIDE": stride, "BLOCK": kernel.BLOCK,
                  "KPAD": kernel.kpad(max_displacement, stride)}
    return compile_kernel(kernel.correlation_kernel, signature, constexprs, arch)


def launch(n: Any, c: Any, h: Any, w: Any, max_displacement: int, stride: int,
           cdiv: Callable[[Any, int], Any] = int_cdiv) -> tuple[tuple[Any, Any, Any], tuple[Any, ...]]:
    """(grid, int scalars) for an input (N, C, H, W); ints or TensorRT shape expressions."""
    return kernel.launch_grid(n, h, w, max_displacement, stride, cdiv), (c, h, w)


def register() -> None:
    """Register the plugin with TensorRT (needs the [tensorrt] extra)."""
    trt, trtp = import_trtp()
    from typing import List, Tuple, Union  # noqa: UP035 - tensorrt.plugin matches these forms

    @trtp.register(OP_ID)
    def _desc(f1: trtp.TensorDesc, f2: trtp.TensorDesc, max_displacement: int, stride: int) -> trtp.TensorDesc:
        s = f1.shape_expr
        k2 = kernel.num_displacements(max_displacement, stride)
        return trtp.from_shape_expr((s[0], k2, s[2], s[3]), dtype=f1.dtype)

    @trtp.autotune(OP_ID)
    def _tune(f1: trtp.TensorDesc, f2: trtp.TensorDesc, max_displacement: int, stride: int,
              outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl(OP_ID)
    def _aot(f1: trtp.TensorDesc, f2: trtp.TensorDesc, max_displacement: int, stride: int,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        ck = aot_kernel(dtype_name(trt, f1.dtype), max_displacement, stride, current_arch())
        s = f1.shape_expr
        return aot_result(trtp, ck, *launch(s[0], s[1], s[2], s[3], max_displacement, stride, trtp.cdiv))  # type: ignore[return-value]
