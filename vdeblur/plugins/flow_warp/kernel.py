"""Triton kernel of ``vdeblur::FlowWarp``: bilinear backward warp, align_corners=True.

One program takes a block of pixels of one image, computes the four bilinear taps and weights
once, and loops over channels (4 gathers and 3 FMAs per channel). Sample position
(x + flow_x, y + flow_y) in pixels; "border" clamps it into the image first (as grid_sample
does), "zeros" reads 0 for taps outside. Parameter order follows TensorRT's AOT convention
(inputs, int scalars, outputs); the padding mode is a constexpr.
Grid: (cdiv(H*W, BLOCK), N); the launch plan is in spec.py.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def flow_warp_kernel(x_ptr, flow_ptr, C, H, W, out_ptr, BORDER: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    hw = H * W
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < hw
    py = (p // W).to(tl.float32)
    px = (p % W).to(tl.float32)
    fx = tl.load(flow_ptr + n * 2 * hw + p, mask=pm, other=0.0).to(tl.float32)
    fy = tl.load(flow_ptr + n * 2 * hw + hw + p, mask=pm, other=0.0).to(tl.float32)
    sx = px + fx
    sy = py + fy
    if BORDER:
        sx = tl.minimum(tl.maximum(sx, 0.0), (W - 1).to(tl.float32))
        sy = tl.minimum(tl.maximum(sy, 0.0), (H - 1).to(tl.float32))
    x0f = tl.floor(sx)
    y0f = tl.floor(sy)
    wx1 = sx - x0f
    wy1 = sy - y0f
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    vx0 = (x0 >= 0) & (x0 < W)
    vx1 = (x1 >= 0) & (x1 < W)
    vy0 = (y0 >= 0) & (y0 < H)
    vy1 = (y1 >= 0) & (y1 < H)
    m00 = pm & vy0 & vx0
    m01 = pm & vy0 & vx1
    m10 = pm & vy1 & vx0
    m11 = pm & vy1 & vx1
    o00 = y0 * W + x0
    o01 = y0 * W + x1
    o10 = y1 * W + x0
    o11 = y1 * W + x1
    w00 = wy0 * wx0
    w01 = wy0 * wx1
    w10 = wy1 * wx0
    w11 = wy1 * wx1
    base = n * C * hw
    for c in range(C):
        src = x_ptr + base + c * hw
        v = tl.load(src + o00, mask=m00, other=0.0).to(tl.float32) * w00
        v += tl.load(src + o01, mask=m01, other=0.0).to(tl.float32) * w01
        v += tl.load(src + o10, mask=m10, other=0.0).to(tl.float32) * w10
        v += tl.load(src + o11, mask=m11, other=0.0).to(tl.float32) * w11
        tl.store(out_ptr + base + c * hw + p, v.to(out_ptr.dtype.element_ty), mask=pm)
