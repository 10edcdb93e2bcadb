"""Triton kernel of ``vdeblur::DynamicFilter``: every pixel filtered by its own k x k kernel.

One program takes a block of pixels of one channel c of one image; it reads the k*k weight planes of
c's group (g = c // (C // G)) at those pixels and the k*k shifted x values (0 outside the image),
and accumulates in float32. k comes from the weight's shape (a runtime int, so one compiled kernel
serves every k and no attribute is needed). The group index is clamped into [0, G): the TensorRT
plugins cannot refuse a G that does not divide C, and the kernel must not read outside the weight.
Parameter order follows TensorRT's AOT convention: input pointers, int scalars, output pointers.
Grid: (cdiv(H*W, BLOCK), C, N); the launch plan is in spec.py.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dynamic_filter_kernel(x_ptr, w_ptr, C, H, W, G, K, out_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    hw = H * W
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < hw
    y = p // W
    x = p % W
    per_group = tl.maximum(C // G, 1)
    g = tl.minimum(c // per_group, G - 1)
    r = K // 2
    x_base = x_ptr + (n * C + c) * hw
    w_base = w_ptr + (n * G + g) * K * K * hw
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(K):
        ys = y + i - r
        my = pm & (ys >= 0) & (ys < H)
        for j in range(K):
            xs = x + j - r
            m = my & (xs >= 0) & (xs < W)
            v = tl.load(x_base + ys * W + xs, mask=m, other=0.0).to(tl.float32)
            wv = tl.load(w_base + (i * K + j) * hw + p, mask=pm, other=0.0).to(tl.float32)
            acc += wv * v
    tl.store(out_ptr + (n * C + c) * hw + p, acc.to(out_ptr.dtype.element_ty), mask=pm)
