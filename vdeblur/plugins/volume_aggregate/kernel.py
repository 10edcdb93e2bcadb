"""Triton kernel of ``vdeblur::VolumeAggregate``: flash-attention style all-range softmax aggregation.

One program takes BLOCK_M query pixels of one image and BLOCK_D value channels. It streams the keys in
tiles of BLOCK_N pixels: the (BLOCK_M, BLOCK_N) logits of a tile are summed over the channels in steps
of BLOCK_C (``tl.dot``, float32 accumulation), then an online softmax updates the running maximum m, the
running sum l and the (BLOCK_M, BLOCK_D) float32 accumulator (``acc <- acc * exp(m - m') + P @ V``). The
logit volume only ever exists as one register tile. C and Cv may have any size (channel loops and
masks); keys past h*w get a -inf logit. Float32 inputs use IEEE float32 products (no TF32), float16
inputs float16 products with float32 accumulation (P is rounded to float16 for P @ V).

Parameter order follows TensorRT's AOT plugin convention: input pointers, int scalars, output
pointers, then the constexprs. Grid: (cdiv(H*W, BLOCK_M), cdiv(Cv, BLOCK_D), N); see spec.py.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def volume_aggregate_kernel(
    q_ptr, k_ptr, v_ptr, C, H, W, U, V, D, out_ptr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    dblk = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    HW = H * W
    hw = U * V
    IEEE: tl.constexpr = q_ptr.dtype.element_ty == tl.float32
    p = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    pmask = p < HW
    d = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    cs = tl.arange(0, BLOCK_C)
    js = tl.arange(0, BLOCK_N)
    q_base = q_ptr + n * C * HW
    k_base = k_ptr + n * C * hw
    v_base = v_ptr + n * D * hw
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for j0 in range(0, hw, BLOCK_N):
        j = j0 + js
        jmask = j < hw
        s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cs
            cmask = c < C
            qb = tl.load(q_base + c[None, :] * HW + p[:, None], mask=pmask[:, None] & cmask[None, :], other=0.0)
            kb = tl.load(k_base + c[:, None] * hw + j[None, :], mask=cmask[:, None] & jmask[None, :], other=0.0)
            if IEEE:
                s += tl.dot(qb, kb, input_precision="ieee")
            else:
                s += tl.dot(qb, kb)
        s = tl.where(jmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        pr = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        vb = tl.load(v_base + d[None, :] * hw + j[:, None], mask=jmask[:, None] & dmask[None, :], other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(pr, vb, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(pr.to(vb.dtype), vb)
        m_i = m_new
    out = acc / l_i[:, None]
    out_off = n * D * HW + d[None, :] * HW + p[:, None]
    tl.store(out_ptr + out_off, out.to(out_ptr.dtype.element_ty), mask=pmask[:, None] & dmask[None, :])
