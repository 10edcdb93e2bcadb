"""``vdeblur::CorrelationArgmax`` as a torch.library custom op (CUDA: fused Triton kernel)."""

from __future__ import annotations

import torch

from vdeblur.errors import UsageError
from vdeblur.plugins._checks import check_feature, check_int, check_same
from vdeblur.plugins._dispatch import use_kernel
from vdeblur.plugins.correlation_argmax import OP_ID, reference
from vdeblur.plugins.lowering import use_reference


@torch.library.custom_op(OP_ID, mutates_args=())
def correlation_argmax_op(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int) -> torch.Tensor:
    if use_kernel(f1):
        from vdeblur.plugins.correlation_argmax.kernel import correlation_argmax as kernel

        return kernel(f1, f2, max_displacement, pool)
    return reference.correlation_argmax(f1, f2, max_displacement, pool)


@correlation_argmax_op.register_fake
def _(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int) -> torch.Tensor:
    n, _, h, w = f1.shape
    return f1.new_empty((n, 2, h, w), dtype=torch.float32)


def correlation_argmax(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int = 5) -> torch.Tensor:
    """MTU's motion search, fused: normalise, correlate, average-pool, argmax.

    f1, f2: (N, C, H, W). Returns flow (N, 2, H, W) float32 holding integer displacements
    (channel 0 = x, channel 1 = y) in [-d, d]; the first maximum wins at ties (as torch.argmax).
    Not differentiable (the argmax has no gradient). See plugins/correlation_argmax/README.md.
    """
    op = "correlation_argmax"
    check_feature("f1", f1, op)
    check_feature("f2", f2, op)
    check_same(op, f1, f2, ("f1", "f2"), slice(0, 4))
    check_int(op, "max_displacement", max_displacement, 0)
    check_int(op, "pool", pool, 1)
    if pool % 2 == 0:
        raise UsageError(f"{op}: pool={pool} is even. Expected an odd window (the pool is centred, stride 1).")
    if use_reference():
        return reference.correlation_argmax(f1, f2, max_displacement, pool)
    return correlation_argmax_op(f1.detach(), f2.detach(), max_displacement, pool)
