"""TensorRT quickly deployable plugin (AOT) of ``vdeblur::FlowWarp``.

Same structure as correlation/trt.py; padding_mode (a STRING attribute) becomes the BORDER
constexpr of the kernel.
"""

# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations as objects.
from collections.abc import Callable
from typing import Any

from vdeblur.errors import UsageError
from vdeblur.plugins._trt import aot_result, current_arch, dtype_name, import_trtp, int_cdiv
from vdeblur.plugins.aot import CompiledKernel, compile_kernel, triton_dtype
from vdeblur.plugins.flow_warp import OP_ID, PADDING_MODES, kernel


def aot_kernel(dtype: str, padding_mode: str, arch: int) -> CompiledKernel:
    """PTX of the warp kernel for ``sm_<arch>`` with the padding mode baked in."""
    if padding_mode not in PADDING_MODES:
        raise UsageError(f"flow_warp: padding_mode={padding_mode!r} is unknown. Expected 'zeros' or 'border'.")
    t = triton_dtype(dtype)
    signature = {"x_ptr": f"*{t}", "flow_ptr": f"*{t}", "C": "i32", "H": "i32", "W": "i32", "out_ptr": f"*{t}"}
    constexprs = {"BORDER": padding_mode == "border", "BLOCK": kernel.BLOCK}
    return compile_kernel(kernel.flow_warp_kernel, signature, constexprs, arch)


def launch(n: Any, c: Any, h: Any, w: Any,
           cdiv: Callable[[Any, int], Any] = int_cdiv) -> tuple[tuple[Any, Any, Any], tuple[Any, ...]]:
    """(grid, int scalars) for an input (N, C, H, W); ints or TensorRT shape expressions."""
    return kernel.launch_grid(n, h, w, cdiv), (c, h, w)


def register() -> None:
    """Register the plugin with TensorRT (needs the [tensorrt] extra)."""
    trt, trtp = import_trtp()
    from typing import List, Tuple, Union  # noqa: UP035 - tensorrt.plugin matches these forms

    @trtp.register(OP_ID)
    def _desc(x: trtp.TensorDesc, flow: trtp.TensorDesc, padding_mode: str) -> trtp.TensorDesc:
        return x.like()

    @trtp.autotune(OP_ID)
    def _tune(x: trtp.TensorDesc, flow: trtp.TensorDesc, padding_mode: str,
              outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.aot_impl(OP_ID)
    def _aot(x: trtp.TensorDesc, flow: trtp.TensorDesc, padding_mode: str,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        ck = aot_kernel(dtype_name(trt, x.dtype), padding_mode, current_arch())
        s = x.shape_expr
        return aot_result(trtp, ck, *launch(s[0], s[1], s[2], s[3], trtp.cdiv))  # type: ignore[return-value]
