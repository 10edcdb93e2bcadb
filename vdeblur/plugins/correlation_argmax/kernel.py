"""Fused Triton kernel of ``vdeblur::CorrelationArgmax``: the cost volume never leaves registers.

One program owns a TILE x TILE block of output pixels of one image and the (TILE + POOL - 1)^2
halo around it (held in a HALO x HALO register tile, HALO a power of two). For each of the
(2d+1)^2 displacements, in index order, it

1. accumulates over channels, on the halo, the dot products f1(p) . f2(p + disp) and the squared
   norm of the displaced f2 (the norm of f1 is computed once, before the displacement loop), so
   the normalised correlation is ``dot / (max(|f1|, eps) * max(|f2|, eps))`` as with F.normalize;
2. box-filters the halo tile to the output tile with two small matrix products
   ``Bh @ corr @ Bw`` (band matrices of ones, built from iota comparisons; IEEE fp32 dots, no
   TF32), divided by POOL^2 (zero padding counted, like avg_pool2d(count_include_pad=True));
3. keeps the running maximum and its index (strict ``>``: the first maximum wins).

The output is the displacement (x, y) of the maximum as float32. Parameter order follows
TensorRT's AOT convention (inputs, int scalars, outputs); attributes are constexprs.
Grid: (cdiv(W, TILE), cdiv(H, TILE), N); the launch plan is in spec.py.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def correlation_argmax_kernel(
    f1_ptr, f2_ptr, C, H, W, flow_ptr,
    MAX_DISP: tl.constexpr, POOL: tl.constexpr, TILE: tl.constexpr, HALO: tl.constexpr,
):
    tx = tl.program_id(0)
    ty = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    K: tl.constexpr = 2 * MAX_DISP + 1
    P: tl.constexpr = POOL // 2
    hw = H * W
    base = n * C * hw

    # Halo coordinates: rows y0 - P + i, columns x0 - P + j, for i, j < TILE + POOL - 1.
    i = tl.arange(0, HALO)
    hy = ty * TILE - P + i
    hx = tx * TILE - P + i
    used = i < TILE + POOL - 1
    my = used & (hy >= 0) & (hy < H)
    mx = used & (hx >= 0) & (hx < W)
    m1 = my[:, None] & mx[None, :]
    off1 = (hy * W)[:, None] + hx[None, :]

    # Band matrices of the separable box filter: out = Bh @ corr @ Bw.
    o = tl.arange(0, TILE)
    bh = ((i[None, :] >= o[:, None]) & (i[None, :] < o[:, None] + POOL)).to(tl.float32)  # (TILE, HALO)
    bw = ((i[:, None] >= o[None, :]) & (i[:, None] < o[None, :] + POOL)).to(tl.float32)  # (HALO, TILE)

    s1 = tl.zeros([HALO, HALO], dtype=tl.float32)
    for c in range(C):
        a = tl.load(f1_ptr + base + c * hw + off1, mask=m1, other=0.0).to(tl.float32)
        s1 += a * a
    inv1 = 1.0 / tl.maximum(tl.sqrt(s1), 1e-12)

    best = tl.full([TILE, TILE], float("-inf"), dtype=tl.float32)
    best_k = tl.zeros([TILE, TILE], dtype=tl.int32)
    for k in range(K * K):
        dy = k // K - MAX_DISP
        dx = k % K - MAX_DISP
        y2 = hy + dy
        x2 = hx + dx
        m2 = m1 & ((y2 >= 0) & (y2 < H))[:, None] & ((x2 >= 0) & (x2 < W))[None, :]
        off2 = (y2 * W)[:, None] + x2[None, :]
        dot = tl.zeros([HALO, HALO], dtype=tl.float32)
        s2 = tl.zeros([HALO, HALO], dtype=tl.float32)
        for c in range(C):
            a = tl.load(f1_ptr + base + c * hw + off1, mask=m1, other=0.0).to(tl.float32)
            b = tl.load(f2_ptr + base + c * hw + off2, mask=m2, other=0.0).to(tl.float32)
            dot += a * b
            s2 += b * b
        corr = dot * inv1 / tl.maximum(tl.sqrt(s2), 1e-12)
        rows = tl.dot(bh, corr, input_precision="ieee")
        pooled = tl.dot(rows, bw, input_precision="ieee") / (POOL * POOL)
        better = pooled > best
        best = tl.where(better, pooled, best)
        best_k = tl.where(better, k, best_k)

    oy = ty * TILE + o
    ox = tx * TILE + o
    om = ((oy < H)[:, None]) & ((ox < W)[None, :])
    ooff = (oy * W)[:, None] + ox[None, :]
    fx = (best_k % K - MAX_DISP).to(tl.float32)
    fy = (best_k // K - MAX_DISP).to(tl.float32)
    tl.store(flow_ptr + n * 2 * hw + ooff, fx, mask=om)
    tl.store(flow_ptr + n * 2 * hw + hw + ooff, fy, mask=om)
