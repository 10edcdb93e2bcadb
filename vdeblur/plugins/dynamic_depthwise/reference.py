"""Per-sample depthwise convolution (DSTNet's channel-wise KPN) in plain PyTorch: the spec of the op.

It is also the portable ONNX lowering. DSTNet's own code folds the batch into the channels and
calls ``conv2d(..., groups=N*C)``, which fixes N in an exported graph; this shift-and-sum form
(one zero Pad, then per tap a Slice of x times the (N, C, 1, 1) weight plane, summed, then the
bias) traces to standard ONNX ops with dynamic N, H and W, also inside the body of a
``torch._higher_order_ops.scan``: no operation takes a size computed from H or W (the tap windows
are sliced with static starts and ends counted from the end of the padded axis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dynamic_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Convolve channel c of sample n with its own k x k kernel weight[n, c].

    x: (N, C, H, W); weight: (N, C, k, k), k odd; bias: (C,). Returns (N, C, H, W) with
    ``out[n, c, y, x] = sum_{i,j} weight[n, c, i, j] * x[n, c, y + i - k//2, x + j - k//2] + bias[c]``,
    zero padding k//2, stride 1. Computed in the inputs' dtype (taps in order, then the bias).
    """
    c, k = x.shape[1], weight.shape[2]
    r = k // 2
    padded = F.pad(x, (r, r, r, r))
    out = None
    for i in range(k):
        for j in range(k):
            term = weight[:, :, i : i + 1, j : j + 1] * padded[:, :, i : _end(i, k), j : _end(j, k)]
            out = term if out is None else out + term
    assert out is not None
    return out + bias.reshape(1, c, 1, 1)


def _end(start: int, k: int) -> int | None:
    """The end of a tap's window on the padded axis, counted from its end (no image size needed)."""
    return start - (k - 1) or None
