"""Triton kernel of ``vdeblur::DynamicDepthwise``: per-sample depthwise convolution.

One program takes a block of pixels of one channel c of one image: it sums the k*k taps
weight[n, c, i, j] * x[n, c, y + i - k//2, x + j - k//2] (0 outside the image) in float32, in the
reference's order, then adds bias[c]. Each tap's weight is one scalar load per program. k comes
from the weight's shape (a runtime int: one compiled kernel for every k, no attribute). Parameter
order follows TensorRT's AOT convention: input pointers, int scalars, output pointers.
Grid: (cdiv(H*W, BLOCK), C, N); the launch plan is in spec.py.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dynamic_depthwise_kernel(x_ptr, w_ptr, b_ptr, C, H, W, K, out_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    hw = H * W
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < hw
    y = p // W
    x = p % W
    r = K // 2
    plane = (n * C + c) * hw
    w_base = w_ptr + (n * C + c) * K * K
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(K):
        ys = y + i - r
        my = pm & (ys >= 0) & (ys < H)
        for j in range(K):
            xs = x + j - r
            m = my & (xs >= 0) & (xs < W)
            v = tl.load(x_ptr + plane + ys * W + xs, mask=m, other=0.0).to(tl.float32)
            acc += tl.load(w_base + i * K + j).to(tl.float32) * v
    acc += tl.load(b_ptr + c).to(tl.float32)
    tl.store(out_ptr + plane + p, acc.to(out_ptr.dtype.element_ty), mask=pm)
