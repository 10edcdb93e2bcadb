"""Triton kernel of ``vdeblur::Correlation``.

One program computes, for a block of pixels of one image, the products with every horizontal
displacement of one vertical displacement dy: a (BLOCK, KPAD) tile of the output where KPAD is
the next power of two of K. Each f1 value is loaded once per dy (not once per displacement) and
accumulated in float32 over the channels.

Parameter order follows TensorRT's AOT plugin convention: input pointers, int scalars, output
pointers; the op attributes are constexprs (AOT engines do not serialise attributes).
Grid: (cdiv(H*W, BLOCK), K, N).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from vdeblur.plugins._trt import int_cdiv

if TYPE_CHECKING:  # torch only for the launcher; the AOT path (TensorRT plugins) must not need it
    import torch

BLOCK = 64


@triton.jit
def correlation_kernel(
    f1_ptr, f2_ptr, C, H, W, out_ptr,
    MAX_DISP: tl.constexpr, STRIDE: tl.constexpr, BLOCK: tl.constexpr, KPAD: tl.constexpr,
):
    pid = tl.program_id(0)
    row = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    R: tl.constexpr = MAX_DISP // STRIDE
    K: tl.constexpr = 2 * R + 1
    hw = H * W
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pmask = p < hw
    y = p // W
    x = p % W
    j = tl.arange(0, KPAD)
    dy = (row - R) * STRIDE
    dx = (j - R) * STRIDE
    y2 = y + dy
    x2 = x[:, None] + dx[None, :]
    m2 = (pmask & (y2 >= 0) & (y2 < H))[:, None] & (j[None, :] < K) & (x2 >= 0) & (x2 < W)
    off2 = (y2 * W)[:, None] + x2
    base = n * C * hw
    acc = tl.zeros([BLOCK, KPAD], dtype=tl.float32)
    for c in range(C):
        a = tl.load(f1_ptr + base + c * hw + p, mask=pmask, other=0.0).to(tl.float32)
        b = tl.load(f2_ptr + base + c * hw + off2, mask=m2, other=0.0).to(tl.float32)
        acc += a[:, None] * b
    out_c = row * K + j
    out_off = (n * (K * K) + out_c[None, :]) * hw + p[:, None]
    omask = pmask[:, None] & (j[None, :] < K)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=omask)


def launch_grid(n, h, w, max_displacement: int, stride: int, cdiv=int_cdiv):  # type: ignore[no-untyped-def]
    """Grid (x, y, z) for N images of H x W; ints, or TensorRT shape expressions with trtp.cdiv."""
    return (cdiv(h * w, BLOCK), 2 * (max_displacement // stride) + 1, n)


def num_displacements(max_displacement: int, stride: int) -> int:
    k = 2 * (max_displacement // stride) + 1
    return k * k


def kpad(max_displacement: int, stride: int) -> int:
    return triton.next_power_of_2(2 * (max_displacement // stride) + 1)


def correlation(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int = 1) -> torch.Tensor:
    """Launch the kernel (CUDA, or CPU under TRITON_INTERPRET=1). Shapes as in reference.correlation."""
    import torch

    f1 = f1.contiguous()
    f2 = f2.contiguous()
    n, c, h, w = f1.shape
    k = 2 * (max_displacement // stride) + 1
    out = torch.empty((n, k * k, h, w), dtype=f1.dtype, device=f1.device)
    grid = launch_grid(n, h, w, max_displacement, stride)
    correlation_kernel[grid](
        f1, f2, c, h, w, out,
        MAX_DISP=max_displacement, STRIDE=stride, BLOCK=BLOCK, KPAD=kpad(max_displacement, stride),
    )
    return out
