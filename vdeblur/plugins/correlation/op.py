"""``vdeblur::Correlation`` as a torch.library custom op (CUDA: Triton kernel; else: reference)."""

from __future__ import annotations

import torch

from vdeblur.plugins._checks import check_feature, check_int, check_same
from vdeblur.plugins._dispatch import reference_vjp, use_kernel
from vdeblur.plugins.correlation import OP_ID, reference
from vdeblur.plugins.correlation.kernel import num_displacements
from vdeblur.plugins.lowering import use_reference


@torch.library.custom_op(OP_ID, mutates_args=())
def correlation_op(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int) -> torch.Tensor:
    if use_kernel(f1):
        from vdeblur.plugins.correlation.kernel import correlation as kernel

        return kernel(f1, f2, max_displacement, stride)
    return reference.correlation(f1, f2, max_displacement, stride)


@correlation_op.register_fake
def _(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int) -> torch.Tensor:
    n, _, h, w = f1.shape
    return f1.new_empty((n, num_displacements(max_displacement, stride), h, w))


def _setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    f1, f2, max_displacement, stride = inputs
    ctx.save_for_backward(f1, f2)
    ctx.args = (max_displacement, stride)


def _backward(ctx, grad):  # type: ignore[no-untyped-def]
    f1, f2 = ctx.saved_tensors
    g1, g2 = reference_vjp(reference.correlation, (f1, f2), grad, *ctx.args)
    return g1, g2, None, None


correlation_op.register_autograd(_backward, setup_context=_setup)


def correlation(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int = 1) -> torch.Tensor:
    """Local correlation cost volume (FlowNet style, kernel 1, zero padding).

    f1, f2: (N, C, H, W). Returns (N, K*K, H, W), K = 2 * (max_displacement // stride) + 1,
    channel i*K + j holding ``sum_c f1(y, x) * f2(y + dy_i, x + dx_j)`` with dy, dx in
    ``range(-d, d + 1, stride)`` (row-major over (dy, dx)). See plugins/correlation/README.md.
    """
    op = "correlation"
    check_feature("f1", f1, op)
    check_feature("f2", f2, op)
    check_same(op, f1, f2, ("f1", "f2"), slice(0, 4))
    check_int(op, "max_displacement", max_displacement, 0)
    check_int(op, "stride", stride, 1)
    if use_reference():
        return reference.correlation(f1, f2, max_displacement, stride)
    return correlation_op(f1, f2, max_displacement, stride)
