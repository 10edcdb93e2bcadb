"""The torch face of every op, generated from its :class:`~vdeblur.plugins.spec.OpSpec`.

- :func:`call`: the entry point: checks the inputs and attributes (clear errors before any kernel
  runs), then calls the reference while exporting under ``lowering("portable")`` (so it traces to
  standard ONNX ops), else the custom op.
- :func:`custom_op`: ``torch.ops.vdeblur.<Name>`` registered with ``torch.library`` (once per
  process): the Triton kernel on CUDA tensors, the reference elsewhere; a fake implementation from
  the spec's output rules; autograd as the spec declares it (``"reference"``: gradients by
  recomputing the reference under autograd; ``None``: the inputs are detached, no gradient).
- :func:`launch`: runs the Triton kernel with the spec's launch plan.
- :func:`register_all`, run when this module is imported: every op's reference and custom op are
  resolved up front, so that an entry point called while Dynamo traces (a
  ``torch._higher_order_ops.scan`` body, ``torch.compile``) is only dict lookups and checks.

``VDEBLUR_CPU_KERNELS=1`` together with ``TRITON_INTERPRET=1`` routes CPU tensors through the
Triton kernels in Triton's interpreter: that is how the plumbing around the kernels is tested on
machines without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins.lowering import use_reference
from vdeblur.plugins.spec import OpSpec

_SCHEMA_TYPES = {"INT": "int", "FLOAT": "float", "STRING": "str"}
_OPS: dict[str, Any] = {}
_REFERENCES: dict[str, Any] = {}


def call(spec: OpSpec, *inputs: torch.Tensor, **attrs: Any) -> Any:
    """Run op ``spec`` on ``inputs`` (shapes and dtypes as its spec and op card say)."""
    values = spec.bind_attrs(attrs)
    check_inputs(spec, inputs)
    args = tuple(values.values())
    if use_reference():
        return reference(spec)(*inputs, *args)
    if spec.autograd is None:
        inputs = tuple(x.detach() for x in inputs)
    return custom_op(spec)(*inputs, *args)


def check_inputs(spec: OpSpec, inputs: Sequence[Any]) -> None:
    """ShapeError unless ``inputs`` are tensors of the spec's ranks, dtypes and matching sizes, on one
    device (UsageError for a wrong number of them)."""
    op = spec.name
    if len(inputs) != len(spec.inputs):
        raise UsageError(f"{op}: {len(inputs)} tensors were given. Expected {len(spec.inputs)} "
                         f"({', '.join(i.name for i in spec.inputs)}).")
    seen: dict[str, tuple[torch.Tensor, str]] = {}
    for decl, x in zip(spec.inputs, inputs, strict=True):
        name, layout = decl.name, decl.layout
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"{op}: {name} is a {type(x).__name__}. Expected a torch.Tensor ({', '.join(layout)}).")
        if x.dim() != len(layout):
            raise ShapeError(f"{op}: {name} has shape {tuple(x.shape)}. "
                             f"Expected {len(layout)} dimensions ({', '.join(layout)}).")
        if str(x.dtype).removeprefix("torch.") not in decl.dtypes:
            raise ShapeError(f"{op}: {name} has dtype {x.dtype}. Expected one of {', '.join(decl.dtypes)}.")
        size = dict(zip(layout, x.shape, strict=True))
        if decl.channels is not None and size["C"] != decl.channels:
            why = f" ({decl.doc})" if decl.doc else ""
            raise ShapeError(f"{op}: {name} has {size['C']} channels. Expected {decl.channels}{why}.")
        if decl.like is not None:
            other, other_layout = seen[decl.like]
            if any(size[d] != other.shape[other_layout.index(d)] for d in decl.like_dims):
                raise ShapeError(f"{op}: {decl.like} {tuple(other.shape)} and {name} {tuple(x.shape)} do not match. "
                                 f"Expected equal sizes in {', '.join(decl.like_dims)}.")
        if x.device != inputs[0].device:
            raise ShapeError(f"{op}: {spec.inputs[0].name} is on {inputs[0].device} and {name} on {x.device}. "
                             "Expected one device.")
        if "H" in size and (size["H"] < decl.min_hw or size["W"] < decl.min_hw):
            raise ShapeError(f"{op}: {name} is {size['H']}x{size['W']}. Expected H, W >= {decl.min_hw}.")
        seen[name] = (x, layout)
    sizes = {name: dict(zip(layout, x.shape, strict=True)) for name, (x, layout) in seen.items()}
    broken = spec.broken_shape_rule(sizes)
    if broken is not None:
        raise ShapeError(f"{op}: {broken}")


def use_kernel(t: torch.Tensor) -> bool:
    """Whether the custom op runs the Triton kernel on ``t``'s device (see the module docstring)."""
    if t.is_cuda:
        return True
    return os.environ.get("VDEBLUR_CPU_KERNELS") == "1" and os.environ.get("TRITON_INTERPRET") == "1"


def launch(spec: OpSpec, *inputs: torch.Tensor, **attrs: Any) -> Any:
    """Run the op's Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1) on checked inputs."""
    values = spec.bind_attrs(attrs)
    inputs = tuple(x.contiguous() for x in inputs)
    shapes = [tuple(x.shape) for x in inputs]
    dtype = str(inputs[0].dtype).removeprefix("torch.")
    outs = [torch.empty(shape, dtype=getattr(torch, spec.output_dtype(i, dtype)), device=inputs[0].device)
            for i, shape in enumerate(spec.output_shapes(shapes, values))]
    grid, scalars = spec.plan(shapes, values)
    spec.launch.load()[grid](*inputs, *scalars, *outs, **spec.launch.constexprs(values),
                             num_warps=spec.launch.num_warps)
    return outs[0] if len(outs) == 1 else tuple(outs)


def schema(spec: OpSpec) -> str:
    """The torch.library schema, e.g. ``(Tensor f1, Tensor f2, int max_displacement, int stride) -> Tensor``."""
    args = [f"Tensor {i.name}" for i in spec.inputs] + [f"{_SCHEMA_TYPES[a.type]} {a.name}" for a in spec.attrs]
    outs = "Tensor" if len(spec.outputs) == 1 else f"({', '.join('Tensor' for _ in spec.outputs)})"
    return f"({', '.join(args)}) -> {outs}"


def reference(spec: OpSpec) -> Any:
    """The op's reference function, resolved once per process (a dict lookup afterwards, which
    Dynamo traces: see :func:`register_all`)."""
    if spec.id not in _REFERENCES:
        _REFERENCES[spec.id] = spec.reference_fn()
    return _REFERENCES[spec.id]


def custom_op(spec: OpSpec) -> Any:
    """``torch.ops.vdeblur.<Name>`` as a torch.library CustomOpDef; registered once per process."""
    if spec.id in _OPS:
        return _OPS[spec.id]
    n = len(spec.inputs)
    names = [a.name for a in spec.attrs]
    ref = reference(spec)

    def impl(*args: Any) -> Any:
        if use_kernel(args[0]):
            return launch(spec, *args[:n], **dict(zip(names, args[n:], strict=True)))
        return ref(*args)

    def fake(*args: Any) -> Any:
        first = args[0]
        shapes = spec.output_shapes([tuple(x.shape) for x in args[:n]], dict(zip(names, args[n:], strict=True)))
        dtype = str(first.dtype).removeprefix("torch.")
        outs = [first.new_empty(s, dtype=getattr(torch, spec.output_dtype(i, dtype))) for i, s in enumerate(shapes)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    op = torch.library.custom_op(spec.id, impl, mutates_args=(), schema=schema(spec))
    op.register_fake(fake)
    if spec.autograd == "reference":

        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.save_for_backward(*inputs[:n])
            ctx.attrs = inputs[n:]

        def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            return (*reference_vjp(ref, ctx.saved_tensors, grads, *ctx.attrs), *(None for _ in names))

        op.register_autograd(backward, setup_context=setup_context)
    _OPS[spec.id] = op
    return op


def reference_vjp(fn: Any, inputs: Sequence[torch.Tensor], grad_outputs: Sequence[torch.Tensor], *args: Any
                  ) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``fn(*inputs, *args)`` with respect to ``inputs``, by recomputing it under autograd."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in inputs]
        out = fn(*leaves, *args)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(torch.autograd.grad(outs, leaves, grad_outputs, allow_unused=True))


def register_all() -> None:
    """Resolve every op's reference and register every custom op, now.

    Done when this module is imported, so that an entry point called while Dynamo traces (the body
    of a ``torch._higher_order_ops.scan``, which Dynamo compiles even in eager mode, or
    ``torch.compile``) only looks the op up: importing the reference module there
    (``importlib.import_module``) is a graph break, which a scan body does not allow."""
    from vdeblur.plugins.registry import specs

    for spec in specs().values():
        custom_op(spec)


register_all()
