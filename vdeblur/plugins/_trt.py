"""Shared helpers of the TensorRT plugin registrations (tensorrt is imported lazily)."""

from __future__ import annotations

import os
from typing import Any

from vdeblur.errors import BackendError, missing_dependency


def import_trtp() -> tuple[Any, Any]:
    """(tensorrt, tensorrt.plugin), or a MissingDependencyError naming the [tensorrt] extra."""
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError as e:
        raise missing_dependency("tensorrt", "tensorrt", "registering the vdeblur TensorRT plugins") from e
    return trt, trtp


def dtype_name(trt: Any, dtype: Any) -> str:
    """TensorRT DataType -> 'float32' | 'float16'."""
    names = {trt.float32: "float32", trt.float16: "float16"}
    if dtype not in names:
        raise BackendError(f"tensorrt plugin: data type {dtype} is not supported. Expected FP32 or FP16.")
    return names[dtype]


def current_arch() -> int:
    """Compute capability of the GPU TensorRT is building for, as an int (e.g. 90).

    ``VDEBLUR_AOT_ARCH`` overrides it (cross-building); otherwise Triton's CUDA driver is asked.
    """
    forced = os.environ.get("VDEBLUR_AOT_ARCH")
    if forced:
        return int(forced)
    try:
        import triton

        return int(triton.runtime.driver.active.get_current_target().arch)
    except Exception as e:
        raise BackendError(
            f"tensorrt plugin: cannot read the GPU's compute capability ({e}). "
            "Build on a machine with an NVIDIA GPU, or set VDEBLUR_AOT_ARCH (e.g. 90)."
        ) from e


def int_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def aot_result(trtp: Any, kernel: Any, grid: tuple[Any, Any, Any], scalars: tuple[Any, ...]) -> tuple[Any, ...]:
    """The return value of an ``@trtp.aot_impl``: (name, PTX, launch parameters, extra int scalars).

    kernel: a :class:`vdeblur.plugins.aot.CompiledKernel`; grid and scalars: ints or shape expressions.
    """
    params = trtp.KernelLaunchParams()
    params.grid_x, params.grid_y, params.grid_z = grid
    params.block_x = kernel.block_x
    params.shared_mem = kernel.shared_mem
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in scalars])
    return kernel.name.encode(), kernel.ptx.encode(), params, extra
