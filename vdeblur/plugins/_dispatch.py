"""Where a custom op runs: the Triton kernel on CUDA tensors, the reference elsewhere.

``VDEBLUR_CPU_KERNELS=1`` together with ``TRITON_INTERPRET=1`` routes CPU tensors through the
Triton kernels in Triton's interpreter: that is how the custom-op plumbing around the kernels is
tested on machines without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch


def use_kernel(t: torch.Tensor) -> bool:
    if t.is_cuda:
        return True
    return os.environ.get("VDEBLUR_CPU_KERNELS") == "1" and os.environ.get("TRITON_INTERPRET") == "1"


def reference_vjp(
    fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], grad_out: torch.Tensor, *args: object
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``fn(*inputs, *args)`` by recomputing the reference under autograd."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in inputs]
        out = fn(*leaves, *args)
        grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    return tuple(grads)
