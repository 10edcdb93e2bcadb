"""Triton kernel of ``vdeblur::Correlation``.

One program computes, for a block of pixels of one image, the products with every horizontal
displacement of one vertical displacement dy: a (BLOCK, KPAD) tile of the output where KPAD is
the next power of two of K. Each f1 value is loaded once per dy (not once per displacement) and
accumulated in float32 over the channels.

Parameter order follows TensorRT's AOT plugin convention: input pointers, int scalars, output
pointers; the op attributes are constexprs (AOT engines do not serialise attributes).
Grid: (cdiv(H*W, BLOCK), K, N); the launch plan is in spec.py.
"""

from __future__ import annotations

import triton
import triton.language as tl


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
