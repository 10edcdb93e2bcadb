"""Correlation cost volume (FlowNet style, kernel 1) in plain PyTorch: the spec of the op.

It is also the portable ONNX lowering: it traces to Pad, Slice, Mul, ReduceSum and Concat, so
it avoids unfolding the neighbour features into a (C x D^2) tensor (5 GB at 720p for MTU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def displacements(max_displacement: int, stride: int = 1) -> list[int]:
    """The displacements along one axis: range(-d, d + 1, stride) with d rounded down to the stride."""
    r = max_displacement // stride
    return [i * stride for i in range(-r, r + 1)]


def correlation(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, stride: int = 1) -> torch.Tensor:
    """Local cost volume.

    f1, f2: (N, C, H, W). Returns (N, K*K, H, W) with K = 2 * (d // stride) + 1 and
    ``out[n, i*K + j, y, x] = sum_c f1[n, c, y, x] * f2[n, c, y + dy_i, x + dx_j]``,
    dy_i, dx_j in ``displacements(d, stride)`` (row-major over (dy, dx)); f2 is zero outside the
    image. Accumulates in (at least) float32 and returns f1's dtype.
    """
    d = (max_displacement // stride) * stride
    h, w = f1.shape[-2], f1.shape[-1]
    acc = torch.promote_types(f1.dtype, torch.float32)  # float32, or float64 for float64 inputs
    a = f1.to(acc)
    b = F.pad(f2.to(acc), (d, d, d, d))
    planes = []
    for dy in displacements(max_displacement, stride):
        rows = b[:, :, d + dy : d + dy + h, :]
        for dx in displacements(max_displacement, stride):
            planes.append((a * rows[:, :, :, d + dx : d + dx + w]).sum(dim=1, keepdim=True))
    return torch.cat(planes, dim=1).to(f1.dtype)
