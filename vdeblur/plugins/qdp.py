"""TensorRT quickly deployable plugins (AOT), generated from the OpSpecs (tensorrt imported lazily).

:func:`register` defines each op's plugin with ``tensorrt.plugin``: the shape function from the
spec's output rules, the type/format combinations (FP32 or FP16, linear; a fixed-dtype output stays
fixed), and the AOT implementation: the spec's Triton kernel compiled to PTX for the GPU being
built for (:func:`vdeblur.plugins.aot.compile_op`, attributes baked in as constexprs, since AOT
engines do not serialise them) with the spec's launch plan on TensorRT shape expressions.
Registration is idempotent: a plugin already registered in this process is left as it is
(``tensorrt.plugin.register`` raises on a second registration of an id).

Everything the plugin functions compute is in tensorrt-free code (the spec, aot.py), tested
without TensorRT; the functions themselves are tested against a stand-in of ``tensorrt.plugin``
that checks what the real one checks, and through TensorRT's own ``tensorrt.plugin`` Python code
(the tensorrt-cu13-bindings wheel) over a stand-in of its compiled core module
(tests/plugins/test_trt_registration.py says what that covers). The kernel's PTX declares exactly
the arguments TensorRT's AOT launch passes (:func:`vdeblur.plugins.aot.check_trt_launch`).
"""

from __future__ import annotations

import os
from typing import Any

from vdeblur.errors import BackendError, missing_dependency
from vdeblur.plugins.spec import STRING, OpSpec, make_function

_TRT_DTYPES = {"float32": "float32", "float16": "float16"}  # dtype name -> tensorrt attribute
_TRT_FORMATS = {"float32": "FP32", "float16": "FP16"}
_REGISTERED: set[str] = set()


def import_trtp() -> tuple[Any, Any]:
    """(tensorrt, tensorrt.plugin), or a MissingDependencyError naming the [tensorrt] extra."""
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError as e:
        raise missing_dependency("tensorrt", "tensorrt", "registering the vdeblur TensorRT plugins") from e
    return trt, trtp


def register(spec: OpSpec) -> None:
    """Register op ``spec``'s plugin with TensorRT (needs the [tensorrt] extra); again: a no-op.

    ``tensorrt.plugin.register`` is called at most once per id and process: it raises ValueError on
    a second call (tensorrt/plugin/_lib.py). An id that ``tensorrt.plugin`` already knows (registered
    by an earlier import of this module under another name, say) is not registered again; if an
    earlier attempt stopped between ``register`` and ``aot_impl``, the missing parts are added."""
    if spec.id in _REGISTERED:
        return
    trt, trtp = import_trtp()
    describe, tune, aot_impl = plugin_functions(spec, trt, trtp)
    known = registered_definition(trtp, spec.id)
    if known is None:
        trtp.register(spec.id)(describe)
    if known is None or getattr(known, "autotune_func", tune) is None:
        trtp.autotune(spec.id)(tune)
    if known is None or getattr(known, "aot_impl_func", aot_impl) is None:
        trtp.aot_impl(spec.id)(aot_impl)
    _REGISTERED.add(spec.id)


def registered_definition(trtp: Any, plugin_id: str) -> Any:
    """The definition ``tensorrt.plugin`` holds for ``plugin_id`` (``trtp.op.<namespace>.<name>``), or
    None. ``trtp.op`` and its namespaces raise AttributeError for unknown names."""
    namespace, name = plugin_id.split("::")
    return getattr(getattr(getattr(trtp, "op", None), namespace, None), name, None)


def plugin_functions(spec: OpSpec, trt: Any, trtp: Any) -> tuple[Any, Any, Any]:
    """The functions given to ``trtp.register``, ``trtp.autotune`` and ``trtp.aot_impl``.

    Their signatures are what tensorrt.plugin validates: the input descriptors, then the attributes
    with their Python types, then (autotune) ``outputs`` and (aot_impl) ``outputs, tactic``.
    """
    tensors = [(i.name, trtp.TensorDesc) for i in spec.inputs]
    attrs = [(a.name, a.py_type) for a in spec.attrs]
    outputs = tuple[tuple(trtp.TensorDesc for _ in spec.outputs)]  # type: ignore[misc]
    returns = trtp.TensorDesc if len(spec.outputs) == 1 else outputs
    aot_returns = tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]  # type: ignore[misc]

    def parse(args: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        descs = [args[i.name] for i in spec.inputs]
        # STRING attributes arrive as char fields with the terminating NUL (reference/TENSORRT.md).
        values = {a.name: args[a.name].rstrip("\x00") if a.type == STRING else args[a.name] for a in spec.attrs}
        return descs, spec.bind_attrs(values)

    def describe(args: dict[str, Any]) -> Any:
        descs, values = parse(args)
        shapes = spec.output_shapes([tuple(d.shape_expr) for d in descs], values)
        outs = tuple(trtp.from_shape_expr(shape, dtype=_trt_dtype(trt, spec, i, descs[0].dtype))
                     for i, shape in enumerate(shapes))
        return outs[0] if len(outs) == 1 else outs

    def tune(args: dict[str, Any]) -> list[Any]:
        return [trtp.AutoTuneCombination(format_combination(spec), "LINEAR")]

    def aot_impl(args: dict[str, Any]) -> tuple[Any, ...]:
        from vdeblur.plugins.aot import compile_op

        descs, values = parse(args)
        kernel = compile_op(spec, dtype_name(trt, descs[0].dtype), values, current_arch())
        grid, scalars = spec.plan([tuple(d.shape_expr) for d in descs], values, trtp.cdiv)
        return aot_result(trtp, kernel, grid, scalars)

    return (
        make_function(f"{spec.name}_desc", tensors + attrs, returns, describe),
        make_function(f"{spec.name}_tune", [*tensors, *attrs, ("outputs", outputs)],
                      list[trtp.AutoTuneCombination], tune),
        make_function(f"{spec.name}_aot", [*tensors, *attrs, ("outputs", outputs), ("tactic", int)],
                      aot_returns, aot_impl),
    )


def format_combination(spec: OpSpec) -> str:
    """The AutoTuneCombination types, e.g. "FP32|FP16, FP32|FP16, FP32": every input, then every
    output (linked choices; an output of fixed dtype keeps it)."""
    choice = "|".join(_TRT_FORMATS[d] for d in spec.plugin_dtypes)
    outs = [choice if o.dtype is None else _TRT_FORMATS[o.dtype] for o in spec.outputs]
    return ", ".join([choice] * len(spec.inputs) + outs)


def _trt_dtype(trt: Any, spec: OpSpec, index: int, input_dtype: Any) -> Any:
    fixed = spec.outputs[index].dtype
    return input_dtype if fixed is None else getattr(trt, _TRT_DTYPES[fixed])


def dtype_name(trt: Any, dtype: Any) -> str:
    """TensorRT DataType -> 'float32' | 'float16'."""
    names = {getattr(trt, attr): name for name, attr in _TRT_DTYPES.items()}
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
