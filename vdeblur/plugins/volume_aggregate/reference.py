"""All-range softmax aggregation (ARVo) in plain PyTorch: the spec of the op and its portable lowering.

``out[n, :, y, x] = sum_{u,v} softmax_{(u,v)}(<q[n, :, y, x], k[n, :, u, v]>) * v[n, :, u, v]``: ARVo's
exp-normalised all-range correlation volume, applied to the values without ever materialising the
(H*W) x (h*w) volume (829 M entries at 720p level 1). The keys are taken in chunks of ``CHUNK`` with an
online softmax: a running maximum m, a running sum s and a running weighted accumulation a per query
pixel (``a <- a * exp(m - m') + exp(L - m') @ v``), so the largest temporary is one (H*W) x CHUNK tile of
logits and memory is O(H*W*CHUNK + h*w) whatever the key count.

Two forms of the same computation:

- eager (no tracing): a Python loop over the key chunks, in a ``torch.autograd.Function`` whose
  backward is chunked too (flash-attention style: each chunk's probabilities are recomputed from the
  saved log-sum-exp), so training memory is bounded like the forward's;
- traced (``torch.onnx.export(dynamo=True)``, ``torch.export``, ``torch.compile``): the keys are padded to a
  whole number of chunks (padded keys get a -inf logit bias) and a ``torch._higher_order_ops.scan`` runs
  over the chunks; it exports as one ONNX ``Scan`` whose body is MatMul / ReduceMax / Exp / ReduceSum /
  Mul / Add on one tile, so ONNX Runtime also never holds more than one tile, with h and w dynamic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch._higher_order_ops import scan
from torch.autograd.function import once_differentiable

CHUNK = 512  # keys per chunk: a (H*W) x CHUNK float32 tile of logits (118 MB at 720p level 1)


def _step(q: torch.Tensor, m: torch.Tensor, s: torch.Tensor, acc: torch.Tensor, k: torch.Tensor,
          v: torch.Tensor, bias: torch.Tensor | None, buffer: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of the online softmax. q (N, HW, C), k (N, C, B), v (N, B, Cv); m, s (N, HW, 1),
    acc (N, HW, Cv); bias (1, 1, B) or None; ``buffer``: where to write the (N, HW, B) logits (eager:
    no fresh allocation per chunk). Returns the updated (m, s, acc). The logit tile becomes the
    probabilities in place. Under autograd (``torch.compile`` of a training step differentiates the
    scan form) this stays correct: the maximum is detached (the result does not depend on it), the
    matrix product does not keep its output and exp_ keeps its own.
    """
    logits = torch.matmul(q, k) if buffer is None else torch.matmul(q, k, out=buffer)  # (N, HW, B)
    if bias is not None:
        logits = logits + bias
    m_new = torch.maximum(m, logits.detach().amax(dim=-1, keepdim=True))
    p = logits.sub_(m_new).exp_()
    alpha = torch.exp(m - m_new)
    return m_new, s * alpha + p.sum(dim=-1, keepdim=True), acc * alpha + torch.matmul(p, v)


def _loop(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager forward, no autograd: the online softmax over key chunks, a Python loop, the logit tile
    written into one buffer. q (N, HW, C), k (N, C, hw), v (N, hw, Cv). Returns out (N, HW, Cv) and
    the log-sum-exp of each query's logits (N, HW, 1)."""
    n, hq, hw = q.shape[0], q.shape[1], k.shape[-1]
    m = q.new_full((n, hq, 1), float("-inf"))
    s = q.new_zeros((n, hq, 1))
    acc = q.new_zeros((n, hq, v.shape[-1]))
    tile = q.new_empty(n * hq * min(CHUNK, hw))
    for start in range(0, hw, CHUNK):
        b = min(CHUNK, hw - start)
        buffer = tile[:n * hq * b].view(n, hq, b)
        m, s, acc = _step(q, m, s, acc, k[:, :, start:start + b], v[:, start:start + b], None, buffer)
    return acc / s, m + torch.log(s)


class _Chunked(torch.autograd.Function):
    """The eager op with a chunked backward (flash-attention style): the backward recomputes each
    chunk's probabilities from the saved log-sum-exp, so it is memory-bounded like the forward."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out, lse = _loop(q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v, out, lse = ctx.saved_tensors
        grad = grad.contiguous()
        dq = torch.zeros_like(q)
        dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        delta = (grad * out).sum(dim=-1, keepdim=True)  # (N, HW, 1): sum_j P_ij dP_ij
        n, hq, hw = q.shape[0], q.shape[1], k.shape[-1]
        tiles = q.new_empty((2, n * hq * min(CHUNK, hw)))  # two (N, HW, B) tiles, reused by every chunk
        for start in range(0, hw, CHUNK):
            b = min(CHUNK, hw - start)
            kc, vc = k[:, :, start:start + b], v[:, start:start + b]
            p = torch.matmul(q, kc, out=tiles[0, :n * hq * b].view(n, hq, b)).sub_(lse).exp_()  # probabilities
            dv[:, start:start + b] = torch.matmul(p.transpose(1, 2), grad)
            ds = torch.matmul(grad, vc.transpose(1, 2), out=tiles[1, :n * hq * b].view(n, hq, b))
            ds.sub_(delta).mul_(p)  # dL/dlogits
            dq.baddbmm_(ds, kc.transpose(1, 2))
            dk[:, :, start:start + b] = torch.matmul(q.transpose(1, 2), ds)
        return dq, dk, dv


def _scanned(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Traced: the same online softmax as one ``scan`` over whole chunks (hw may be symbolic)."""
    n, c, hw = k.shape
    cv = v.shape[-1]
    chunks = (hw + CHUNK - 1) // CHUNK
    pad = chunks * CHUNK - hw  # < CHUNK: every chunk holds at least one real key
    ks = F.pad(k, (0, pad)).reshape(n, c, chunks, CHUNK).permute(2, 0, 1, 3)  # (T, N, C, B)
    vs = F.pad(v, (0, 0, 0, pad)).reshape(n, chunks, CHUNK, cv).permute(1, 0, 2, 3)  # (T, N, B, Cv)
    real = torch.arange(chunks * CHUNK, device=k.device) < hw
    bias = torch.where(real, 0.0, float("-inf")).to(q.dtype).reshape(chunks, 1, 1, CHUNK)  # (T, 1, 1, B)
    m = q.new_full((q.shape[0], q.shape[1], 1), float("-inf"))
    s = q.new_zeros((q.shape[0], q.shape[1], 1))
    acc = q.new_zeros((q.shape[0], q.shape[1], cv))

    def body(carry: tuple[torch.Tensor, ...], xs: tuple[torch.Tensor, ...]) -> tuple[tuple, torch.Tensor]:
        m, s, acc = _step(q, *carry, *xs)
        return (m, s, acc), m.new_zeros(())  # the per-chunk output is a scalar (unused)

    (m, s, acc), _ = scan(body, (m, s, acc), (ks, vs, bias))
    return acc / s


def volume_aggregate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """All-range softmax aggregation.

    q: (N, C, H, W) queries; k: (N, C, h, w) keys; v: (N, Cv, h, w) values (H, W independent of h, w).
    Returns (N, Cv, H, W) in q's dtype:
    ``out[n, :, y, x] = sum_{u,v} softmax_{(u,v)}(sum_c q[n, c, y, x] * k[n, c, u, v]) * v[n, :, u, v]``
    (no scale factor; max-subtracted, so large logits are safe). Computes in (at least) float32 with an
    online softmax over chunks of ``CHUNK`` keys: the (H*W) x (h*w) volume is never materialised.
    """
    n, _, h, w = q.shape
    cv = v.shape[1]
    acc = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
    qf = q.to(acc).flatten(2).transpose(1, 2)  # (N, HW, C)
    kf = k.to(acc).flatten(2)  # (N, C, hw)
    vf = v.to(acc).flatten(2).transpose(1, 2)  # (N, hw, Cv)
    out = _scanned(qf, kf, vf) if torch.compiler.is_compiling() else _Chunked.apply(qf, kf, vf)  # (N, HW, Cv)
    return out.transpose(1, 2).reshape(n, cv, h, w).contiguous().to(q.dtype)
