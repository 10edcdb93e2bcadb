"""MTU's motion search in plain PyTorch: the spec of the fused op (and its portable lowering).

normalise -> correlation -> pool x pool average -> argmax -> (x, y) displacement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vdeblur.plugins.correlation.reference import correlation


def pooled_cost(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int = 5) -> torch.Tensor:
    """The pooled cost volume (N, (2d+1)^2, H, W), float32: the quantity the argmax runs over."""
    a = F.normalize(f1.float(), dim=1)
    b = F.normalize(f2.float(), dim=1)
    cost = correlation(a, b, max_displacement, 1)
    return F.avg_pool2d(cost, pool, stride=1, padding=pool // 2, count_include_pad=True)


def correlation_argmax(f1: torch.Tensor, f2: torch.Tensor, max_displacement: int, pool: int = 5) -> torch.Tensor:
    """Integer motion vectors by exhaustive local search.

    f1, f2: (N, C, H, W). Both are L2-normalised over channels (as ``F.normalize``), correlated
    over displacements in [-d, d]^2 (zero padding), averaged over a pool x pool window (stride 1,
    zero padding counted) and reduced by argmax over displacements (the first maximum wins).
    Returns flow (N, 2, H, W) float32: channel 0 = x displacement, channel 1 = y displacement.
    """
    k = 2 * max_displacement + 1
    idx = pooled_cost(f1, f2, max_displacement, pool).argmax(dim=1, keepdim=True)
    fx = torch.remainder(idx, k) - max_displacement
    fy = torch.div(idx, k, rounding_mode="floor") - max_displacement
    return torch.cat([fx, fy], dim=1).float()
