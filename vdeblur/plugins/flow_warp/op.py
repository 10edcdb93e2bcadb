"""``vdeblur::FlowWarp`` as a torch.library custom op (CUDA: Triton kernel; else: reference)."""

from __future__ import annotations

import torch

from vdeblur.errors import ShapeError, UsageError
from vdeblur.plugins._checks import check_feature, check_same
from vdeblur.plugins._dispatch import reference_vjp, use_kernel
from vdeblur.plugins.flow_warp import OP_ID, PADDING_MODES, reference
from vdeblur.plugins.lowering import use_reference


@torch.library.custom_op(OP_ID, mutates_args=())
def flow_warp_op(x: torch.Tensor, flow: torch.Tensor, padding_mode: str) -> torch.Tensor:
    if use_kernel(x):
        from vdeblur.plugins.flow_warp.kernel import flow_warp as kernel

        return kernel(x, flow, padding_mode)
    return reference.flow_warp(x, flow, padding_mode)


@flow_warp_op.register_fake
def _(x: torch.Tensor, flow: torch.Tensor, padding_mode: str) -> torch.Tensor:
    return torch.empty_like(x)


def _setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, flow, padding_mode = inputs
    ctx.save_for_backward(x, flow)
    ctx.padding_mode = padding_mode


def _backward(ctx, grad):  # type: ignore[no-untyped-def]
    x, flow = ctx.saved_tensors
    gx, gflow = reference_vjp(reference.flow_warp, (x, flow), grad, ctx.padding_mode)
    return gx, gflow, None


flow_warp_op.register_autograd(_backward, setup_context=_setup)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Backward warp: ``out(y, x) = x_in(y + flow_y, x + flow_x)``, bilinear, align_corners=True.

    x: (N, C, H, W); flow: (N, 2, H, W) in pixels (channel 0 = x, channel 1 = y); padding_mode
    "zeros" or "border"; H, W >= 2. Differentiable in x and flow. See plugins/flow_warp/README.md.
    """
    op = "flow_warp"
    check_feature("x", x, op)
    check_feature("flow", flow, op)
    if flow.shape[1] != 2:
        raise ShapeError(f"{op}: flow has {flow.shape[1]} channels. Expected 2 (x, y displacement in pixels).")
    check_same(op, x, flow, ("x", "flow"), slice(2, 4))
    if x.shape[0] != flow.shape[0]:
        raise ShapeError(f"{op}: x has batch {x.shape[0]} and flow {flow.shape[0]}. Expected equal batch sizes.")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ShapeError(f"{op}: x is {x.shape[2]}x{x.shape[3]}. Expected H, W >= 2 (align_corners=True).")
    if padding_mode not in PADDING_MODES:
        raise UsageError(f"{op}: padding_mode={padding_mode!r} is unknown. Expected 'zeros' or 'border'.")
    if use_reference():
        return reference.flow_warp(x, flow, padding_mode)
    return flow_warp_op(x, flow, padding_mode)
